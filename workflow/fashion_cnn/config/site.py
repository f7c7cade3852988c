"""What the machine running Snakemake offers: visible GPUs, the container image, and whether
local jobs can have the GPU they ask for. Torch-free (Snakemake imports it on the login node)."""

from __future__ import annotations

import os
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


def check_container_image(image: str) -> None:
    """With --use-singularity every job runs in ``image``: it must be a file that exists or a
    reference Apptainer can pull, or the first job would fail after the DAG was planned."""
    scheme = urlsplit(image).scheme
    if scheme in PULLABLE_SCHEMES:
        return
    how = (
        "Build it with `make image` (Apptainer 1.2 or newer, and internet; `make image CUDA=12.8` "
        "for NVIDIA drivers older than 580), or point `container:` at an image you have: a .sif "
        "path, or a reference such as docker://ghcr.io/<you>/fashion-cnn:0.1.0 "
        "(containers/README.md). Or run without one: leave out --use-singularity, or set "
        "container: none. Nothing was run."
    )
    if "://" in image:
        raise UserError(
            f"Config error: container = {image!r} is neither a file nor a reference Apptainer can "
            f"pull ({', '.join(s + '://' for s in PULLABLE_SCHEMES)}), and --use-singularity (or "
            f"the cluster profile) runs every job in it. {how}"
        )
    if not Path(image).is_file():
        where = "does not exist" if not Path(image).exists() else "is not a file"
        raise UserError(
            f"Config error: container = {image} {where} (relative to {Path.cwd()}), and "
            f"--use-singularity (or the cluster profile) runs every job in it. {how}"
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
