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
    "assess_robustness",
    "plot_filters",
    "export_onnx",
}


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


def laptop_profile(folder: Path, threads: dict | None = None) -> Path:
    """profiles/slurm with only what a one-node laptop cluster needs changed (threads: 1 for
    each rule the profile sets, unless ``threads`` names it)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "main"
    del profile["default-resources"]["slurm_account"]
    profile["slurm-status-command"] = "squeue"  # no accounting database, so no sacct
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-keep-successful-logs"] = True  # the requeue test reads them
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = 0  # a failure here should fail the test, not be retried away
    profile["set-threads"] = {**dict.fromkeys(profile["set-threads"], 1), **(threads or {})}
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
    "assess_robustness:mem_mb=1500",
    "export_onnx:mem_mb=1500",
]


def cpu_only(tmp_path: Path) -> Path:
    """engine.device: cpu asks for no GPU: the jobs train on the fake-GPU node's CPU on purpose."""
    return write_config(tmp_path / "cpu.yaml", "engine: {device: cpu}\n")


# A sweep over two keys on two seeds: its point's name, in the wildcards the plugin passes with
# --target-jobs (split on commas), must reach the job whole.
TWO_KEY_SWEEP = """
sweeps:
  two_keys:
    experiment: cnn_small_plain
    grid: {learning_rate: [0.002], batch_size: [32]}
    seeds: [1, 2]
run_sweeps: [two_keys]
"""
POINT = "sweeps/two_keys/learning_rate=0.002/batch_size=32"


def test_workflow_runs_through_sbatch(cluster, tmp_path):
    """The whole DAG, a two-key sweep on two seeds with it, through sbatch. Snakemake runs on one
    CPU of the two (taskset: a login node smaller than the compute nodes), and the cluster
    profile's threads still reach SLURM: the workstation profile, applied after it, sets no
    `cores` to cap them."""
    workdir = tmp_path / "work"
    log = tmp_path / "apptainer.jsonl"
    env = {**os.environ, **cluster.env, "FAKE_APPTAINER_LOG": str(log)}
    env["PATH"] = f"{FAKES}:{Path(sys.executable).parent}:{env['PATH']}"
    image = tmp_path / "fashion-cnn.sif"
    image.write_text("stand-in image\n")  # what `make image` leaves (the stand-in runs jobs)
    profile = laptop_profile(tmp_path / "profile", threads={"train_model": 2})
    argv = snakemake_argv(
        workdir,
        "--profile",
        profile,
        *MEMORY_OVERRIDES,
        configfiles=[
            CONFIGS / "slurm.yaml",
            cpu_only(tmp_path),
            write_config(tmp_path / "image.yaml", f"container: {image}\n"),
            write_config(tmp_path / "sweep.yaml", TWO_KEY_SWEEP),
        ],
    )
    result = subprocess.run(
        ["taskset", "-c", "0", *argv], capture_output=True, text=True, env=env, timeout=1500
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
    submitted: dict[str, list[dict]] = {}
    for job_id in job_ids:
        job = cluster.job(job_id)
        rule = re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", job["Comment"]).group(1)
        submitted.setdefault(rule, []).append(job)
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["Partition"] == "main"
        # engine.device: cpu, so no job waits for a GPU it would not use
        assert "gpu" not in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    assert set(submitted) == SUBMITTED_RULES
    training = submitted["train_model"]
    # the command line's memory, the rule's own time limit, which it did not drop, and the
    # cluster profile's threads, not the login node's one core
    assert all(job["MinMemoryNode"] == "1500M" for job in training)
    assert all(job["TimeLimit"] == "04:00:00" for job in training)
    assert all(job["NumCPUs"] == "2" for job in training), [job["NumCPUs"] for job in training]
    # each seed of the experiment and of the sweep's point is its own training and evaluation job
    assert len(training) == 4 and len(submitted["evaluate_model"]) == 4
    assert len(submitted["assess_robustness"]) == 4
    assert len(job_ids) == len(SUBMITTED_RULES) + 9
    for run in ("cnn_small_plain", POINT):
        for seed in (1, 2):
            assert (results / run / f"seed-{seed}" / "model.pt").is_file(), (run, seed)
        over_seeds = json.loads((results / run / "metrics.json").read_text())
        assert over_seeds["seeds"] == [1, 2] and over_seeds["test_accuracy_over_seeds"]["n"] == 2
    point = json.loads((results / POINT / "seed-2" / "metrics.json").read_text())
    assert (point["config"]["learning_rate"], point["config"]["batch_size"]) == (0.002, 32)
    table = (results / "sweeps" / "two_keys" / "sweep.csv").read_text()
    assert "learning_rate=0.002/batch_size=32" in table

    # inside the jobs, every command ran in the container with --nv (the stand-in recorded it),
    # except the data's, which needs no image and runs with Snakemake's Python
    executions = [json.loads(line) for line in log.read_text().splitlines() if '"exec"' in line]
    ran = [call["argv"][-1].split("fashion_cnn ")[1].split()[0] for call in executions]
    assert "train-model" in ran and "plot-samples" in ran
    assert "prepare-data" not in ran and "download-data" not in ran
    assert all("--nv" in call["flags"] and call["image"] == str(image) for call in executions)


@pytest.mark.parametrize(
    ("request_form", "retries"),
    [([], 1), (["train_model:gpu=0", "train_model:gres=gpu:1"], 0)],
    ids=["gpus", "gres"],  # the rule's --gpus=1, or the profile's documented form for gres sites
)
def test_a_job_given_a_gpu_it_cannot_use_stops_at_once(cluster, tmp_path, request_form, retries):
    """The default device (auto) on a GPU node whose GPU PyTorch cannot use (here a fake one;
    on a real cluster, a driver older than the image's CUDA): the rule's GPU request reached
    sbatch through the command line's --set-resources, and the job stops with the paragraph
    instead of training on the CPU for hours. The paragraph reaches the user's terminal, and a
    retry (the profile's `retries:`) stops the same way at once, its first line saying that no
    retry mends it."""
    workdir = tmp_path / "work"
    result = snakemake(
        workdir,
        "--profile",
        laptop_profile(tmp_path / "profile"),
        "results/cnn_small_plain/seed-1/model.pt",  # a target: not after a list-taking option
        "--retries",
        str(retries),
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
    assert len(training) == 1 + retries, output[-3000:]
    for job in training:
        assert "gpu" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
        assert job["MinMemoryNode"] == "1500M" and job["TimeLimit"] == "04:00:00"
        assert job["JobState"] == "FAILED", job
    log = (workdir / "results/logs/train_model/cnn_small_plain/seed-1.log").read_text()
    message = flat(log)
    assert "This job asked for a GPU" in message and "finds no CUDA device" in message
    assert "no NVIDIA driver is loaded here" in message
    assert "This job asked for a GPU" in flat(output)  # shown on the terminal, not only in the log
    # and the SLURM log's end too (a job that failed before its command ran has no other)
    assert "The cluster's own log of" in output and "slurm_logs/rule_train_model" in output
    assert_no_traceback(log)
    if retries:
        last = log.split("===== attempt 2")[1]
        first_error = last.split(" ERROR ", 1)[1].split(": ", 1)[1]
        assert first_error.startswith("Not mended by a retry: attempt 2 stopped"), last
    folder = workdir / "results" / "cnn_small_plain" / "seed-1"
    assert not (folder / "model.pt").exists() and not (folder / "train_state.pt").exists()


def test_a_cluster_run_stops_before_any_job_on_a_missing_image_or_a_time_limit_too_short(
    cluster, tmp_path
):
    """Two mistakes a cluster user makes, each stopped before anything is submitted with one
    paragraph for that user: the image `make image` has not built yet (the way without one is
    the profile user's, not --use-singularity's), and a time limit within the profile's early
    SIGTERM lead (each attempt would be signalled seconds after it starts, three times)."""
    workdir = tmp_path / "work"
    profile = laptop_profile(tmp_path / "profile")
    env = {**os.environ, **cluster.env}
    missing = snakemake(
        workdir, "--profile", profile, configfiles=[CONFIGS / "slurm.yaml"], env=env, timeout=300
    )
    message = flat(missing.stderr)
    assert missing.returncode != 0 and "does not exist" in message, message[-2000:]
    assert "--config container=none" in message and "--use-singularity" not in message
    assert_no_traceback(missing.stderr)

    short = snakemake(
        workdir,
        "--profile",
        profile,
        *MEMORY_OVERRIDES[:1],
        "train_model:mem_mb=1500",
        "train_model:runtime=2",
        "--config",
        "container=none",
        configfiles=[CONFIGS / "slurm.yaml", cpu_only(tmp_path)],
        env=env,
        timeout=300,
    )
    output = short.stdout + short.stderr
    message = flat(output)
    assert short.returncode != 0, output[-3000:]
    assert "train_model's time limit (runtime = 2 minutes)" in message, message[-3000:]
    assert "--signal=TERM@120" in message and "Nothing was submitted" in message
    assert "has been submitted with SLURM jobid" not in output
    assert_no_traceback(short.stderr)


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
    # `cores` caps every job's threads, a cluster job's too (Snakemake constrains them by the
    # login node's --cores): the workstation's `cores: all` would cut set-threads on the cluster
    assert "cores" not in default
