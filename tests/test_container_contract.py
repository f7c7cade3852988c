"""The container contract: with --use-singularity every job that does work goes through Apptainer,
with the configured image and the profile's --nv.

No Apptainer runtime exists in this machine's package registries, so a stand-in
(tests/fakes/apptainer) records each call and runs the command on the host. This checks the
contract between the workflow, its profile and Apptainer, not Apptainer itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, snakemake

pytestmark = pytest.mark.workflow

FAKES = Path(__file__).resolve().parent / "fakes"
# Every rule that does work, by the subcommand it runs.
WORKING_RULES = {
    "download-data",
    "prepare-data",
    "plot-samples",
    "plot-augmentations",
    "fetch-weights",
    "train-model",
    "evaluate-model",
    "plot-filters",
    "aggregate-seeds",
    "export-onnx",
    "summarize",
}


def run_in_container(workdir: Path, log: Path, *targets, configfiles):
    """`snakemake --cores 2 --use-singularity` (the workstation command) with the stand-in."""
    env = os.environ.copy()
    # the stand-in first; then this virtualenv, standing in for the image's Python
    env["PATH"] = f"{FAKES}:{Path(sys.executable).parent}:{env['PATH']}"
    env["FAKE_APPTAINER_LOG"] = str(log)
    return snakemake(
        workdir, "--cores", "2", "--use-singularity", *targets, configfiles=configfiles, env=env
    )


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def subcommand(call: dict) -> str:
    words = call["argv"][-1].split()
    return words[words.index("fashion_cnn") + 1]


def test_every_job_runs_in_the_configured_image_with_nv(tmp_path):
    log = tmp_path / "apptainer.jsonl"
    workdir = tmp_path / "work"
    result = run_in_container(workdir, log, configfiles=[CONFIGS / "container.yaml"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = calls(log)
    uri = "docker://ghcr.io/fashion-cnn/fashion-cnn:0.1.0"  # config.yaml's `container:`
    pulls = [r for r in records if r["command"] == "pull"]
    assert [p["uri"] for p in pulls] == [uri]
    image = str(
        workdir / ".snakemake" / "singularity" / f"{hashlib.md5(uri.encode()).hexdigest()}.simg"
    )
    jobs = [r for r in records if r["command"] == "exec"]
    for job in jobs:
        assert job["image"] == image
        assert "--nv" in job["flags"], "GPU pass-through must come from the profile"
        assert job["options"]["--home"] == [str(workdir)]
        # the code is used from the checkout inside the container, not baked into the image
        assert f"PYTHONPATH={REPO / 'workflow'}" in job["argv"][-1]
        assert "python -m fashion_cnn" in job["argv"][-1]
    assert {subcommand(job) for job in jobs} == WORKING_RULES
    # and the same jobs, one each, that Snakemake ran: nothing bypassed the container
    finished = result.stderr.count("Finished jobid") - 1  # minus `all`, which runs nothing
    assert len(jobs) == finished


def test_a_local_sif_path_is_used_as_is(tmp_path):
    log = tmp_path / "apptainer.jsonl"
    image = tmp_path / "fashion-cnn.sif"
    image.write_text("stand-in image\n")
    extra = tmp_path / "sif.yaml"
    extra.write_text(f"container: {image}\n")
    workdir = tmp_path / "work"
    result = run_in_container(
        workdir, log, "results/data/samples.png", configfiles=[CONFIGS / "container.yaml", extra]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = calls(log)
    assert not [r for r in records if r["command"] == "pull"]
    jobs = [r for r in records if r["command"] == "exec"]
    assert {subcommand(job) for job in jobs} == {"download-data", "prepare-data", "plot-samples"}
    assert all(job["image"] == str(image) and "--nv" in job["flags"] for job in jobs)
