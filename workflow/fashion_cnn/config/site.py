"""What the machine running Snakemake offers: visible GPUs, the container image, whether local
jobs can have the GPU they ask for, and whether cluster jobs' time limits leave room for their
early SIGTERM. Torch-free (Snakemake imports it on the login node)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from fashion_cnn.core.errors import UserError


def visible_gpus() -> int | None:
    """GPUs this machine shows to a job started here, without importing torch (Snakemake's own
    interpreter may have none); None when it cannot tell (WSL, ROCm)."""
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        count = len(list(driver.iterdir()))
    else:
        count = len(list(Path("/dev").glob("nvidia[0-9]*")))
        if not count and (Path("/dev/dxg").exists() or Path("/dev/kfd").exists()):
            return None
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        listed = [entry for entry in chosen.split(",") if entry.strip() not in ("", "-1")]
        count = min(count, len(listed))
    return count


# What Apptainer can pull (apptainer build/pull's URI formats) and Snakemake passes to it.
PULLABLE_SCHEMES = ("docker", "oras", "library", "shub", "http", "https")


# How each route turned containers on, and how to run without one on that route.
TURNED_ON_BY = {
    "workstation": "--use-singularity (or --sdm apptainer)",
    "cluster": "the cluster profile (software-deployment-method: apptainer)",
}
WITHOUT_A_CONTAINER = {
    "workstation": "leave out --use-singularity (or --sdm apptainer)",
    "cluster": (
        "add --config container=none to the command (the cluster profile's "
        "software-deployment-method: apptainer is then unused; every job runs with the "
        "virtualenv's Python, docs/cluster.md)"
    ),
}


def check_container_image(image: str, route: str = "workstation") -> None:
    """With --use-singularity (or the cluster profile) every job runs in ``image``: it must be a
    file that exists or a reference Apptainer can pull, or the first job would fail after the
    DAG was planned. ``route``: "workstation" or "cluster", for the way to run without one."""
    scheme = urlsplit(image).scheme
    if scheme in PULLABLE_SCHEMES:
        return
    how = (
        "Build it with `make image` (Apptainer 1.2 or newer, and internet; `make image CUDA=12.8` "
        "for NVIDIA drivers older than 580), or point `container:` at an image you have: a .sif "
        "path, or a reference such as docker://ghcr.io/<you>/fashion-cnn:0.1.0 "
        f"(containers/README.md). Or run without one: {WITHOUT_A_CONTAINER[route]}, or set "
        "container: none in the config. Nothing was run."
    )
    if "://" in image:
        raise UserError(
            f"Config error: container = {image!r} is neither a file nor a reference Apptainer can "
            f"pull ({', '.join(s + '://' for s in PULLABLE_SCHEMES)}), and {TURNED_ON_BY[route]} "
            f"runs every job in it. {how}"
        )
    if not Path(image).is_file():
        where = "does not exist" if not Path(image).exists() else "is not a file"
        raise UserError(
            f"Config error: container = {image} {where} (relative to {Path.cwd()}), and "
            f"{TURNED_ON_BY[route]} runs every job in it. {how}"
        )


def check_gpu_for_local_jobs(device: str) -> None:
    """An explicit CUDA device must exist before Snakemake removes any output to rerun a job.

    Only for jobs that run on this machine: on a cluster the GPU is on the compute node."""
    if not device.startswith("cuda"):
        return
    wanted = int(device.partition(":")[2] or 0) + 1
    found = visible_gpus()
    if found is None or found >= wanted:
        return
    raise UserError(
        f"Config error: engine.device = {device}, but this machine shows "
        f"{'no GPU' if not found else f'only {found} GPU(s)'} (no NVIDIA driver devices, or "
        "CUDA_VISIBLE_DEVICES hides them), and the jobs would run here. Nothing was run or "
        "removed. Use device: auto (GPU when present, else CPU) or cpu, or run on a GPU machine "
        "or through the cluster profile."
    )


SIGNAL_LEAD = re.compile(r"--signal=(?:[A-Z0-9]+:)?[A-Z0-9]+@(\d+)")
# SLURM may send the early signal up to a minute before the time it is asked for.
SIGNAL_SLACK_S = 60


def check_signal_lead(rule: str, runtime_min: object, slurm_extra: object) -> None:
    """A cluster job's time limit must outlast the early SIGTERM that lets training save its
    state (the profile's ``--signal=TERM@<s>``): otherwise every attempt is signalled seconds
    after it starts, saves, and stops, and the retries end with the job unfinished."""
    lead = SIGNAL_LEAD.search(str(slurm_extra or ""))
    if lead is None or not isinstance(runtime_min, int | float) or isinstance(runtime_min, bool):
        return
    seconds = int(lead.group(1))
    if runtime_min * 60 - seconds >= SIGNAL_SLACK_S:
        return
    raise UserError(
        f"Config error: {rule}'s time limit (runtime = {runtime_min:g} minutes) leaves less than "
        f"a minute before the early SIGTERM the cluster profile asks for ({lead.group(0)} in "
        f"slurm_extra: {seconds} s before the limit, and SLURM may send it up to a minute "
        "earlier). Every attempt would be signalled within seconds of starting, save its state "
        "and stop, and the retries would end with the job unfinished. Give the job more time "
        f"(--set-resources {rule}:runtime=<minutes>, at least {seconds // 60 + 2}), or shorten "
        "the lead in the profile's slurm_extra (--signal=TERM@<seconds>). Nothing was submitted."
    )


FAILURE_WORDS = re.compile(r"error|traceback|exception|killed|cancelled", re.IGNORECASE)


def cluster_failures(folder: Path, since: float, lines: int = 15, most: int = 5) -> str:
    """The end of every SLURM log under ``folder`` written since ``since`` that reports an error:
    a job that failed before its rule's command ran (a node that cannot start it, a Snakemake
    inside the job that stops) leaves its reason there alone, where the user would not look."""
    found = []
    for path in sorted(folder.rglob("*.log")) if folder.is_dir() else []:
        try:
            if path.stat().st_mtime < since:
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if FAILURE_WORDS.search(text):
            tail = "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
            found.append(f"{path}:\n{tail}")
    if not found:
        return ""
    shown = found[-most:]
    return (
        f"The cluster's own log of {len(found)} failed job(s) (the last {len(shown)} shown; a job "
        "that failed before its rule's command ran has no other):\n" + "\n".join(shown)
    )
