"""The workflow on a real SLURM cluster (one node on localhost, started and stopped here) through
the project's own profiles/slurm, as a user would run it on an HPC cluster.

What a laptop cluster must do differently is overridden, and nothing else: the partition name, no
account (no accounting database), status checks with squeue instead of sacct, faster polling,
threads and memory that fit this machine. The GPUs are fake (they schedule; jobs run on the CPU),
and Apptainer is the recording stand-in of the container contract test.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO, snakemake
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
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = 0  # a failure here should fail the test, not be retried away
    profile["set-threads"] = dict.fromkeys(profile["set-threads"], 1)
    for resources in profile["set-resources"].values():
        if "mem_mb" in resources:
            resources["mem_mb"] = 2000
    profile["default-resources"]["mem_mb"] = 1500
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_workflow_runs_through_sbatch(cluster, tmp_path):
    workdir = tmp_path / "work"
    log = tmp_path / "apptainer.jsonl"
    env = {**os.environ, **cluster.env, "FAKE_APPTAINER_LOG": str(log)}
    env["PATH"] = f"{FAKES}:{Path(sys.executable).parent}:{env['PATH']}"
    result = snakemake(
        workdir,
        "--profile",
        laptop_profile(tmp_path / "profile"),
        configfiles=[CONFIGS / "slurm.yaml"],
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
        gpus = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if rule in ("train_model", "export_onnx"):
            assert "gpu" in gpus, job
        else:
            assert "gpu" not in gpus, job
    assert set(submitted) == SUBMITTED_RULES
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
    assert all("--nv" in call["flags"] for call in executions)


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
    assert profile["set-resources"]["train_model"]["gpu"] == 1
    assert profile["set-resources"]["export_onnx"]["gpu"] == 1
    assert "gpu" not in profile["default-resources"]
    assert profile["retries"] >= 1


def test_workstation_profile_cannot_clobber_the_cluster_profile():
    """Snakemake applies profiles/default after --profile profiles/slurm: any key both set must
    agree, or the workstation value would silently win on the cluster."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    cluster = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for key in set(default) & set(cluster):
        assert default[key] == cluster[key], key
    assert not {"set-threads", "set-resources", "resources", "default-resources"} & set(default)
