"""The workflow on a real SLURM cluster (one node on localhost, started and stopped here) through
the project's own profiles/slurm, as a user would run it on an HPC cluster.

What a laptop cluster must do differently is overridden, and nothing else: the partition name, no
account (no accounting database), status checks with squeue instead of sacct, faster polling,
threads that fit this machine, and memory on the command line as a user would. The GPUs are fake
(they schedule; PyTorch cannot use them), and Apptainer is the recording stand-in of the container
contract test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    CONFIGS,
    REPO,
    assert_no_traceback,
    flat,
    snakemake,
    snakemake_argv,
    snakemake_command,
    write_config,
)
from local_slurm import LocalSlurm, missing_binaries

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

FAKES = Path(__file__).resolve().parent / "fakes"
SUBMITTED_RULES = {  # every rule that is not a localrule
    "prepare_data",
    "plot_samples",
    "plot_augmentations",
    "train_model",
    "evaluate_model",
    "plot_filters",
    "export_onnx",
}
LOCAL_RULES = {"download_data", "fetch_pretrained_weights", "summarize"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root (CI runs as root)")
    if missing_binaries():
        pytest.fail(
            f"SLURM is not installed ({', '.join(missing_binaries())} missing): make setup-test installs it"
        )
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"), partition="main", fake_gpus=1)
    try:
        yield slurm.up()
    finally:
        slurm.down()


def laptop_profile(folder: Path) -> Path:
    """profiles/slurm with only what a one-node laptop cluster needs changed."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "main"
    del profile["default-resources"]["slurm_account"]
    profile["slurm-status-command"] = "squeue"  # no accounting database, so no sacct
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-keep-successful-logs"] = True  # the requeue test reads them
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = 0  # a failure here should fail the test, not be retried away
    profile["set-threads"] = dict.fromkeys(profile["set-threads"], 1)
    profile["default-resources"]["mem_mb"] = 1500
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


# The rules ask for more memory than this 2-core node has. A user lowers it on the command line,
# which replaces whatever set-resources a profile had: the rules' GPU and time requests must stay.
MEMORY_OVERRIDES = [
    "--set-resources",
    "train_model:mem_mb=1500",
    "evaluate_model:mem_mb=1500",
    "export_onnx:mem_mb=1500",
]


def cpu_only(tmp_path: Path) -> Path:
    """engine.device: cpu asks for no GPU: the jobs train on the fake-GPU node's CPU on purpose."""
    return write_config(tmp_path / "cpu.yaml", "engine: {device: cpu}\n")


def test_workflow_runs_through_sbatch(cluster, tmp_path):
    workdir = tmp_path / "work"
    log = tmp_path / "apptainer.jsonl"
    env = {**os.environ, **cluster.env, "FAKE_APPTAINER_LOG": str(log)}
    env["PATH"] = f"{FAKES}:{Path(sys.executable).parent}:{env['PATH']}"
    image = tmp_path / "fashion-cnn.sif"
    image.write_text("stand-in image\n")  # what `make image` leaves (the stand-in runs jobs)
    result = snakemake(
        workdir,
        "--profile",
        laptop_profile(tmp_path / "profile"),
        *MEMORY_OVERRIDES,
        configfiles=[
            CONFIGS / "slurm.yaml",
            cpu_only(tmp_path),
            write_config(tmp_path / "image.yaml", f"container: {image}\n"),
        ],
        env=env,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:] + _slurm_logs(workdir)

    results = workdir / "results"
    for name in (
        "metrics.json",
        "model.onnx",
        "onnx_check.json",
        "filters.png",
        "training_curves.png",
    ):
        assert (results / "cnn_small_plain" / name).is_file(), name
    assert (results / "summary" / "summary.csv").is_file()

    # every non-local job went through sbatch: SLURM itself knows each one, by the rule name the
    # plugin puts in the job's comment
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    submitted = {}
    for job_id in job_ids:
        job = cluster.job(job_id)
        rule = re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", job["Comment"]).group(1)
        submitted[rule] = job
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["Partition"] == "main"
        # engine.device: cpu, so no job waits for a GPU it would not use
        assert "gpu" not in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    assert set(submitted) == SUBMITTED_RULES
    # the command line's memory, and the rule's own time limit, which it did not drop
    assert submitted["train_model"]["MinMemoryNode"] == "1500M"
    assert submitted["train_model"]["TimeLimit"] == "04:00:00"
    # each of the two seeds is its own training job and its own evaluation job
    assert len(job_ids) == len(SUBMITTED_RULES) + 2
    assert (results / "cnn_small_plain" / "seed-1" / "model.pt").is_file()
    assert (results / "cnn_small_plain" / "seed-2" / "model.pt").is_file()
    over_seeds = json.loads((results / "cnn_small_plain" / "metrics.json").read_text())
    assert over_seeds["seeds"] == [1, 2] and over_seeds["test_accuracy_over_seeds"]["n"] == 2

    # inside the jobs, every command ran in the container with --nv (the stand-in recorded it)
    executions = [json.loads(line) for line in log.read_text().splitlines() if '"exec"' in line]
    assert (
        len(executions) >= len(SUBMITTED_RULES) + 2
    )  # plus download_data and summarize, run locally
    assert all("--nv" in call["flags"] and call["image"] == str(image) for call in executions)


@pytest.mark.parametrize(
    "request_form",
    [[], ["train_model:gpu=0", "train_model:gres=gpu:1"]],
    ids=["gpus", "gres"],  # the rule's --gpus=1, or the profile's documented form for gres sites
)
def test_a_job_given_a_gpu_it_cannot_use_stops_at_once(cluster, tmp_path, request_form):
    """The default device (auto) on a GPU node whose GPU PyTorch cannot use (here a fake one;
    on a real cluster, a driver older than the image's CUDA): the rule's GPU request reached
    sbatch through the command line's --set-resources, and the job stops with the paragraph
    instead of training on the CPU for hours."""
    workdir = tmp_path / "work"
    result = snakemake(
        workdir,
        "--profile",
        laptop_profile(tmp_path / "profile"),
        "results/cnn_small_plain/seed-1/model.pt",  # a target: not after a list-taking option
        *MEMORY_OVERRIDES,
        *request_form,
        "--config",
        "container=none",
        configfiles=[CONFIGS / "slurm.yaml"],
        env={**os.environ, **cluster.env},
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    training = [
        cluster.job(job_id)
        for job_id in re.findall(r"has been submitted with SLURM jobid (\d+)", output)
        if cluster.job(job_id)["Comment"].startswith("rule_train_model")
    ]
    assert len(training) == 1, output[-3000:]
    job = training[0]
    assert "gpu" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    assert job["MinMemoryNode"] == "1500M" and job["TimeLimit"] == "04:00:00"
    assert job["JobState"] == "FAILED", job
    log = (workdir / "results/logs/train_model/cnn_small_plain/seed-1.log").read_text()
    message = flat(log)
    assert "This job asked for a GPU" in message and "finds no CUDA device" in message
    assert "no NVIDIA driver is loaded here" in message
    assert_no_traceback(log)
    folder = workdir / "results" / "cnn_small_plain" / "seed-1"
    assert not (folder / "model.pt").exists() and not (folder / "train_state.pt").exists()


def shared_virtualenv(folder: Path) -> Path:
    """A virtualenv at another path (standing in for one on the cluster's shared file system)
    with this one's packages: every job's Snakemake and, with container: none, every step run
    from it."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120
    )
    here = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (next(folder.glob("lib/python*/site-packages")) / "this-checkout.pth").write_text(
        f"{here}\n{REPO / 'workflow'}\n"
    )
    return folder / "bin" / "python"


def test_a_requeued_training_resumes_from_a_shared_virtualenv_without_a_container(
    cluster, tmp_path
):
    """What a pre-emption with requeue does: SLURM stops the job (SIGTERM), the training saves
    its state mid-epoch, SLURM puts the job back in the queue under the same id, Snakemake waits,
    and the job's second run resumes. Both attempts stay in the training log and in the SLURM log.
    The jobs run without a container, from a virtualenv on a "shared" path."""
    python = shared_virtualenv(tmp_path / "shared" / "venv")
    workdir = tmp_path / "work"
    config = write_config(
        tmp_path / "long.yaml",
        "experiments:\n  cnn_small_plain: {train_subset: 2048, epochs: 20, seeds: [1]}\n",
    )
    target = "results/cnn_small_plain/seed-1/model.pt"
    argv = snakemake_argv(
        workdir,
        "--profile",
        laptop_profile(tmp_path / "profile"),
        target,
        *MEMORY_OVERRIDES,
        "--config",
        "container=none",
        configfiles=[CONFIGS / "slurm.yaml", cpu_only(tmp_path), config],
    )
    argv = [str(python), "-m", "snakemake", *argv[len(snakemake_command()) :]]
    env = {**os.environ, **cluster.env}
    env.pop("PYTHONPATH", None)
    state = workdir / "results" / "cnn_small_plain" / "seed-1" / "train_state.pt"
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as run:
        try:
            job_id = _wait_for(lambda: state.is_file() and _training_job(cluster), 300)
            cluster.requeue(job_id)
            output, _ = run.communicate(timeout=600)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, output[-4000:] + _slurm_logs(workdir)
    assert len(re.findall(r"has been submitted with SLURM jobid", output)) == 2  # data, training
    job = cluster.job(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job

    # the compute node started the shared virtualenv's Snakemake (the plugin's --wrap)
    script = cluster.batch_script(job_id)
    assert f"{python} -m snakemake" in script, script

    log = (workdir / "results/logs/train_model/cnn_small_plain/seed-1.log").read_text()
    headers = [line for line in log.splitlines() if line.startswith("===== attempt")]
    assert len(headers) == 2, log
    assert all(f"python {python.parent}" in h and f"SLURM_JOB_ID={job_id}" in h for h in headers)
    first, second = log.split(headers[1])
    assert "SIGTERM received: saving the training state" in first
    assert re.search(r"resuming cnn_small_plain from \S+: epoch \d+, step \d+", second), second
    history = (state.parent / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(1, 21)]

    slurm_log = "".join(
        p.read_text() for p in (workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")
    )
    assert "DUE TO JOB REQUEUE" in slurm_log and slurm_log.count("Finished jobid") >= 1


def _training_job(cluster) -> str | None:
    for line in cluster.squeue("%i %k %T"):
        job_id, comment, job_state = line.split()
        if comment.startswith("rule_train_model") and job_state == "RUNNING":
            return job_id
    return None


def _wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s")


def _slurm_logs(workdir: Path) -> str:
    logs = (
        sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")) if workdir.exists() else []
    )
    return "".join(f"\n--- {p}\n{p.read_text()[-1500:]}" for p in logs[-4:])


def test_profile_keeps_its_cluster_settings():
    """The shipped profile (not the test copy) holds what a real cluster needs."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert (
        profile["software-deployment-method"] == "apptainer" and profile["apptainer-args"] == "--nv"
    )
    # what a job needs is the rule's (the tests above see it reach sbatch), never the profile's
    # set-resources, which a --set-resources on the command line would replace whole
    assert "set-resources" not in profile and "gpu" not in profile["default-resources"]
    assert profile["retries"] >= 1 and profile["slurm-requeue"] is True
    extra = profile["default-resources"]["slurm_extra"]
    assert re.fullmatch(r"'--signal=TERM@\d+ --open-mode=append'", extra), extra


def test_workstation_profile_cannot_clobber_the_cluster_profile():
    """Snakemake applies profiles/default after --profile profiles/slurm: any key both set must
    agree, or the workstation value would silently win on the cluster."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    cluster = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for key in set(default) & set(cluster):
        assert default[key] == cluster[key], key
    assert not {"set-threads", "set-resources", "resources", "default-resources"} & set(default)
