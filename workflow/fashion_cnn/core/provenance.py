"""What produced a result: code version, library versions, machine."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import fashion_cnn

PACKAGES = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "matplotlib")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "fashion-cnn": fashion_cnn.__version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> dict[str, str | bool | None]:
    """The commit of the checkout this code runs from, and whether it had local changes."""
    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def cpuinfo_field(name: str) -> str | None:
    """The first value of ``name`` in Linux's /proc/cpuinfo (None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def device_description(device) -> str:
    import torch  # only with a device: the torch-free config and results layers import this

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return (
        f"cpu ({cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'the default')})"
    )


def provenance(device=None) -> dict:
    record = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "git": git_commit(),
        "versions": library_versions(),
    }
    if device is not None:
        record["device"] = device_description(device)
    return record
