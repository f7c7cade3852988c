"""The container contract: with --use-singularity every job that does work goes through Apptainer,
with the configured image and the profile's --nv; `make image` builds that image where the
default config looks for it; an image that cannot exist stops Snakemake before any job; the
host's Python settings stay out of the container.

No Apptainer runtime exists in this machine's package registries, so a stand-in
(tests/fakes/apptainer) records each call and runs the command on the host. This checks the
contract between the workflow, its profile and Apptainer, not Apptainer itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO, assert_no_traceback, flat, snakemake, write_config

pytestmark = pytest.mark.workflow

FAKES = Path(__file__).resolve().parent / "fakes"
# The rules that need no image (no torch): they run with Snakemake's own Python, whatever
# `container:` says, so switching containers does not redo the data.
HOST_RULES = {"download-data", "prepare-data"}
# Every other rule that does work, by the subcommand it runs.
WORKING_RULES = {
    "plot-samples",
    "plot-augmentations",
    "fetch-weights",
    "train-model",
    "evaluate-model",
    "assess-robustness",
    "assess-experiment",
    "plot-filters",
    "aggregate-seeds",
    "export-onnx",
    "summarize",
}


def run_in_container(workdir: Path, log: Path, *targets, configfiles, env=None):
    """`snakemake --cores 2 --use-singularity` (the workstation command) with the stand-in."""
    env = dict(env or os.environ)
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
    uri = "docker://ghcr.io/fashion-cnn/fashion-cnn:0.1.0"  # container.yaml's `container:`
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
    # and the same jobs, one each, that Snakemake ran: nothing else bypassed the container
    finished = result.stderr.count("Finished jobid") - 1  # minus `all`, which runs nothing
    assert len(jobs) == finished - len(HOST_RULES)
    assert (workdir / "results" / "data" / "fashion_mnist.npz").is_file()


def test_a_local_sif_path_is_used_as_is_and_switching_to_it_keeps_the_data(tmp_path):
    """The data first without a container (container: none), then the same folder with the
    image: the data's rules need no image, so the switch neither reruns them nor rewrites the
    shared resources/ files; only the plot that needs the image runs, in it."""
    log = tmp_path / "apptainer.jsonl"
    image = tmp_path / "fashion-cnn.sif"
    image.write_text("stand-in image\n")
    extra = tmp_path / "sif.yaml"
    extra.write_text(f"container: {image}\n")
    workdir = tmp_path / "work"
    without = write_config(tmp_path / "none.yaml", "container: none\n")
    first = snakemake(
        workdir,
        "--cores",
        "2",
        "results/data/fashion_mnist.npz",
        configfiles=[CONFIGS / "container.yaml", without],
    )
    assert first.returncode == 0, first.stderr[-3000:]
    shared = sorted((workdir / "resources").rglob("*.gz")) + [
        workdir / "results" / "data" / "fashion_mnist.npz"
    ]
    before = {path: path.stat().st_mtime_ns for path in shared}
    assert len(before) == 5

    result = run_in_container(
        workdir, log, "results/data/samples.png", configfiles=[CONFIGS / "container.yaml", extra]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "software environment" not in result.stdout + result.stderr
    assert {path: path.stat().st_mtime_ns for path in shared} == before
    records = calls(log)
    assert not [r for r in records if r["command"] == "pull"]
    jobs = [r for r in records if r["command"] == "exec"]
    assert [subcommand(job) for job in jobs] == ["plot-samples"]
    assert all(job["image"] == str(image) and "--nv" in job["flags"] for job in jobs)


def test_make_image_builds_where_the_default_config_looks(tmp_path):
    log = tmp_path / "apptainer.jsonl"
    env = {**os.environ, "PATH": f"{FAKES}:{os.environ['PATH']}", "FAKE_APPTAINER_LOG": str(log)}
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "image"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    default = yaml.safe_load((REPO / "config.yaml").read_text())["container"]
    assert f"mv -f {default}.partial {default}" in planned  # the default target is config's image

    for cuda, base in (("13.0", "cuda13.0"), ("12.8", "cuda12.8")):
        image = tmp_path / f"fashion-cnn-{cuda}.sif"
        result = subprocess.run(
            ["make", "--no-print-directory", "image", f"IMAGE={image}", f"CUDA={cuda}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert image.is_file() and not Path(f"{image}.partial").exists()
        build = calls(log)[-1]
        assert build["command"] == "build" and build["definition"] == "containers/fashion-cnn.def"
        assert build["from"] == f"pytorch/pytorch:2.14.1-{base}-cudnn9-runtime"

    # no Apptainer: one paragraph saying where to get it, and no image
    bare = {**os.environ, "PATH": "/usr/bin:/bin"}
    image = tmp_path / "none.sif"
    result = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={image}"],
        cwd=REPO,
        env=bare,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Install Apptainer 1.2 or newer" in result.stderr
    assert not image.exists()


@pytest.mark.parametrize(
    "container, expected",
    [
        (None, "does not exist"),  # config.yaml's default, before `make image`
        ("dockr://ghcr.io/fashion-cnn/fashion-cnn:0.1.0", "neither a file nor a reference"),
    ],
    ids=["not built", "not pullable"],
)
def test_an_image_that_cannot_exist_stops_snakemake_before_any_job(tmp_path, container, expected):
    log = tmp_path / "apptainer.jsonl"
    log.touch()
    extra = (
        []
        if container is None
        else [write_config(tmp_path / "c.yaml", f"container: {container}\n")]
    )
    workdir = tmp_path / "work"
    result = run_in_container(workdir, log, configfiles=[*_default_container(tmp_path), *extra])
    assert result.returncode != 0
    message = flat(result.stderr)
    assert expected in message and "make image" in message and "container: none" in message
    # the way without one, for the route this user took (tests/test_slurm.py: the profile's)
    assert "leave out --use-singularity" in message and "--config container=none" not in message
    assert_no_traceback(result.stderr)
    assert calls(log) == []  # nothing pulled, nothing run
    assert not (workdir / "results").exists()


def _default_container(tmp_path: Path) -> list[Path]:
    """container.yaml without its container: line (so config.yaml's default applies)."""
    text = (CONFIGS / "container.yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.startswith("container:"))
    return [write_config(tmp_path / "default-container.yaml", text + "\n")]


def test_the_hosts_python_settings_stay_out_of_the_container(tmp_path):
    """A host PYTHONPATH (a virtualenv's, a user's packages) would shadow the image's packages:
    here it holds a matplotlib that refuses to load, which the job must not see."""
    shadow = tmp_path / "host-site" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('the host PYTHONPATH reached the job')\n"
    )
    image = tmp_path / "fashion-cnn.sif"
    image.write_text("stand-in image\n")
    extra = write_config(tmp_path / "sif.yaml", f"container: {image}\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent), "VIRTUAL_ENV": "/host/venv"}
    log = tmp_path / "apptainer.jsonl"
    result = run_in_container(
        tmp_path / "work",
        log,
        "results/data/samples.png",
        configfiles=[CONFIGS / "container.yaml", extra],
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in (c for c in calls(log) if c["command"] == "exec"):
        command = job["argv"][-1]
        assert "unset PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV" in command
        assert re.search(r"export PYTHONPATH=\S+/workflow; ", command), command
