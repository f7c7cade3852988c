"""Where training runs and how: the device, and the engine switches (channels_last, bf16, compile).

Device and precision are passed in from the config, never decided at import time.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import math
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fashion_cnn.config.checks import graph_unsupported
from fashion_cnn.config.settings import EngineSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.provenance import cpu_name, cpuinfo_field

log = logging.getLogger(__name__)


# The oldest NVIDIA Linux driver each CUDA major version of PyTorch's builds runs on (NVIDIA's
# CUDA release notes, "minor version compatibility"; CUDA 12.8's own release asks for 570.26).
MINIMUM_DRIVER = {"13": "580", "12": "525.60.13"}
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def nvidia_driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. 535.104.05), or None without one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for [^ ]+)?\s+([0-9][0-9.]+)", text)
    return found.group(1) if found else text.split("\n", 1)[0].strip() or None


def require_gpu(spec: str, driver_file: Path = DRIVER_VERSION_FILE) -> None:
    """The job asked the scheduler for a GPU: finding none must stop it, never train on the CPU
    for hours without a word. ``engine.device: cpu`` is a choice, and requests no GPU."""
    if spec == "cpu" or torch.cuda.is_available():
        return
    cuda = torch.version.cuda
    if cuda is None:
        build = f"torch {torch.__version__} is a CPU-only build (no CUDA at all)"
    else:
        needed = MINIMUM_DRIVER.get(cuda.split(".")[0])
        build = f"torch {torch.__version__} is built for CUDA {cuda}" + (
            f", which needs an NVIDIA driver >= {needed}" if needed else ""
        )
    driver = nvidia_driver_version(driver_file)
    found = (
        f"this node's NVIDIA driver is {driver}"
        if driver
        else f"no NVIDIA driver is loaded here ({driver_file} is missing: no GPU on this node, "
        "or a container started without --nv)"
    )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise UserError(
        f"This job asked for a GPU (its rule requests one: resources gpu or gres), but PyTorch "
        f"finds no CUDA device: {build}; {found}"
        f"{f'; CUDA_VISIBLE_DEVICES={visible}' if visible is not None else ''}. Nothing was "
        "trained or written. Run it where the driver is new enough, use an image built for an "
        "older driver (`make image CUDA=12.8`, containers/README.md), or train on the CPU on "
        "purpose with engine.device: cpu (which requests no GPU)."
    )


# Held for the life of the process: the lock on the GPU this job took (claim_gpu).
_claimed: list = []


def claim_gpu(count: int, folder: Path | None = None) -> int | None:
    """On a machine with several GPUs and no scheduler choosing, this job takes one no other job
    of this user holds (an exclusive lock per GPU, released when the process ends) and sees only
    it (CUDA_VISIBLE_DEVICES). Snakemake's ``gpu`` resource keeps the jobs at most one per GPU;
    the locks give each its own device. Returns the index taken, or None when there was nothing
    to choose: the user or a scheduler already set CUDA_VISIBLE_DEVICES, one GPU, or all taken."""
    if count < 2 or "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_ID" in os.environ:
        return None
    folder = folder or Path(tempfile.gettempdir()) / f"fashion-cnn-gpus-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = (folder / f"gpu{index}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _claimed.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        log.info("GPU %d of %d taken for this job (CUDA_VISIBLE_DEVICES=%d)", index, count, index)
        return index
    log.warning(
        "all %d GPUs are held by other fashion-cnn jobs of this user (another Snakemake running?): "
        "sharing one",
        count,
    )
    return None


def resolve_device(spec: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU (logged). An explicit CUDA request must be met."""
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            log.info("device auto: CUDA is available, using %s", torch.cuda.get_device_name(device))
            return device
        log.info("device auto: no CUDA device, falling back to cpu")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"engine.device is '{spec}' but PyTorch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Use device: auto or "
                "cpu, or run on a GPU node (in the container, with --nv)."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"engine.device is '{spec}' but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    return device


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")
) -> float | None:
    """The CPU quota of this process's cgroup and its parents, in CPUs (cgroup v2 ``cpu.max``,
    v1 ``cpu.cfs_quota_us``), or None without one. Containers and SLURM may set one."""
    limits = []
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: walk from the process's cgroup up to the root
            folder = root / path.lstrip("/")
            while True:
                try:
                    quota, period = (folder / "cpu.max").read_text().split()
                    if quota != "max":
                        limits.append(int(quota) / int(period))
                except (OSError, ValueError):
                    pass
                if folder == root or root not in folder.parents:
                    break
                folder = folder.parent
        elif "cpu" in controllers.split(","):  # v1
            folder = root / controllers / path.lstrip("/")
            for candidate in (folder, root / controllers):
                try:
                    v1_quota = int((candidate / "cpu.cfs_quota_us").read_text())
                    v1_period = int((candidate / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if v1_quota > 0:
                    limits.append(v1_quota / v1_period)
                break
    return min(limits) if limits else None


def usable_cpus() -> tuple[int, str]:
    """How many CPUs this process can really run on, and how that was found: its affinity mask
    (taskset, SLURM's cpuset) and its cgroup's CPU quota (a container's --cpus), whichever is
    smaller. More threads than that only wait for each other."""
    if hasattr(os, "sched_getaffinity"):
        count, how = len(os.sched_getaffinity(0)), "the affinity mask"
    else:
        count, how = os.cpu_count() or 1, "the machine's CPU count"
    quota = cgroup_cpu_limit()
    if quota is not None and math.ceil(quota) < count:
        count, how = max(1, math.ceil(quota)), f"the cgroup's CPU quota ({quota:g} CPUs)"
    return count, how


def set_threads(asked: int) -> int:
    """PyTorch's CPU threads: what the job asked for, at most the CPUs it can really use."""
    usable, how = usable_cpus()
    threads = max(1, min(asked, usable))
    if threads < asked:
        log.warning(
            "%d threads asked for, but %s allows %d CPUs: using %d (more would wait for each other)",
            asked,
            how,
            usable,
            threads,
        )
    torch.set_num_threads(threads)
    return threads


# glibc's mallopt(3) parameters, and the value the engine gives both
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30


def keep_freed_memory(setting: str = "auto") -> str:
    """Make glibc's malloc keep the memory PyTorch frees, for the next step to reuse.

    By default glibc returns a freed block to the kernel when it was mmap-ed (large blocks) or
    when enough is free at the top of the heap (M_TRIM_THRESHOLD), and every training step frees
    and allocates the same activations again: the kernel hands the pages back zeroed, one page
    fault each, thousands per step, and the step measurably slower without them (docs/results/notebook.md,
    "CPU: the page faults of every step", measured with tools/allocator_faults.py). With both
    thresholds at 1 GiB the faults stop once the first steps have grown the heap. Process-wide and not undoable; ``system`` (or a
    C library other than glibc) leaves the allocator as it is. Returns what was done, as logged.
    """
    if setting == "system":
        return "system malloc defaults (engine.allocator: system)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"system malloc defaults (not glibc: {platform.system()} {platform.libc_ver()[0]})"
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = all(
            libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(KEEP_BYTES)) == 1
            for parameter in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)
        )
    except (OSError, AttributeError) as error:
        return f"system malloc defaults (mallopt unavailable: {error})"
    if not done:
        return "system malloc defaults (glibc refused mallopt)"
    return "glibc malloc keeps freed memory (trim and mmap thresholds 1 GiB)"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    return set((cpuinfo_field("flags") or "").split())


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs in hardware: AMX or AVX512-BF16 on a CPU, bf16 on a GPU.

    Without it, oneDNN emulates bf16 on the CPU, an order of magnitude slower than fp32
    (docs/results/notebook.md, "Engine switches and their defaults", the row `precision`).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Switches:
    channels_last: bool
    bf16: bool
    compile: bool
    cuda_graph: bool = False

    @classmethod
    def resolve(
        cls,
        engine: EngineSettings,
        device: torch.device,
        precision: str = "engine",
        optimizer: str = "adam",
        lr_schedule: str = "constant",
    ) -> Switches:
        """The engine's switches on this device for this recipe, each choice logged with its
        reason. An experiment may set its own ``precision``; the optimizer and schedule decide
        whether the step can be one CUDA graph."""
        # measured faster for the chapter's CNN on every CPU and GPU tried, ResNet-18 the same
        # within noise (docs/speed.md)
        channels_last = _choose(engine.channels_last, True)
        # measured: at the chapter's batch 64, bf16 autocast is slower on an H100 (its casts add
        # launches to a launch-bound step) and changes the chapter's numerics; opt in
        if precision == "engine":
            precision = engine.precision
        bf16 = _bf16(precision, device)
        compile_model = _choose(engine.compile, False)
        blocker = _graph_blocker(device, compile_model, optimizer, lr_schedule)
        if engine.cuda_graph is True and blocker:
            raise UserError(
                f"engine.cuda_graph is true but the training step cannot be one CUDA graph: "
                f"{blocker}. Set engine.cuda_graph to auto (graphs where they work) or false."
            )
        # measured on an H200 (docs/results/notebook.md, "GPU"): at batch 64 the step is launch-bound
        cuda_graph = _choose(engine.cuda_graph, True) and blocker is None
        switches = cls(channels_last, bf16, compile_model, cuda_graph)
        _log_switches(switches, engine, device, precision, blocker)
        return switches


def _choose(value: bool | str, automatic: bool) -> bool:
    return automatic if value == "auto" else bool(value)


def _bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where asked for and the device has it natively (a warning where not)."""
    if precision != "bf16":
        return False
    if not native_bf16(device):
        log.warning(
            "precision bf16 asked for, but this %s has no native bf16 (no AMX or AVX512-BF16): "
            "emulated bf16 trains about ten times slower than fp32 here, so this run trains "
            "in fp32. Its accuracy may differ a little from a bf16 run's.",
            "CPU" if device.type == "cpu" else "GPU",
        )
        return False
    return True


def _graph_blocker(
    device: torch.device, compile_model: bool, optimizer: str, lr_schedule: str
) -> str | None:
    """Why the training step cannot be one CUDA graph, or None when it can."""
    if device.type != "cuda":
        return f"the device is {device.type}, not CUDA"
    if compile_model:
        return "torch.compile is on (its reduce-overhead mode makes its own graphs)"
    return graph_unsupported(optimizer, lr_schedule)


def _log_switches(
    switches: Switches, engine: EngineSettings, device: torch.device, precision: str, blocker
) -> None:
    """One line: each switch, on or off, and why (measured default, set, or impossible here)."""

    def why(value, setting, automatic_reason):
        return f"{'on' if value else 'off'} ({automatic_reason if setting == 'auto' else 'set'})"

    native = native_bf16(device)
    where = (
        (torch.cuda.get_device_name(device) if torch.cuda.is_available() else str(device))
        if device.type == "cuda"
        else f"{cpu_name()} ({'native bf16' if native else 'no native bf16'})"
    )
    log.info(
        "engine switches on %s: channels_last %s, bf16 autocast %s, torch.compile %s, "
        "CUDA graph %s",
        where,
        why(switches.channels_last, engine.channels_last, "faster on every CPU and GPU measured"),
        "off (asked for, but no native bf16 here)"
        if precision == "bf16" and not switches.bf16
        else why(
            switches.bf16, "auto" if precision == "auto" else "set", "fp32 unless a recipe asks"
        ),
        why(switches.compile, engine.compile, "no gain measured at batch 64"),
        why(switches.cuda_graph, engine.cuda_graph, "the whole step is one graph")
        if switches.cuda_graph
        else f"off ({blocker or 'set'})",
    )
