"""How many CPU threads a job uses, and how it waits (issue 14: a two-thread job on two shared
cores lost 75-85% of its speed).

A job never runs more PyTorch threads than the CPUs it may really use (its affinity mask, as
SLURM's cpuset and taskset set it, and its cgroup's CPU quota), and the command line waits
passively at OpenMP barriers: spinning threads took the time slices the others needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from fashion_cnn.training.device import cgroup_cpu_limit, set_threads

PYTHONPATH = {"PYTHONPATH": str(REPO / "workflow")}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_on_the_way_to_the_root(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    _write(proc / "cgroup", "0::/slurm/uid_0/job_7/step_0\n")
    _write(root / "slurm" / "cpu.max", "max 100000\n")
    _write(root / "slurm" / "uid_0" / "job_7" / "cpu.max", "150000 100000\n")
    _write(root / "slurm" / "uid_0" / "job_7" / "step_0" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, proc) == 1.5
    _write(root / "slurm" / "uid_0" / "job_7" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_quota(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    _write(proc / "cgroup", "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, proc) == 2.0
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "proc") is None


def test_more_threads_than_usable_cpus_are_not_started(monkeypatch, caplog):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr("fashion_cnn.training.device.usable_cpus", lambda: (1, "the affinity mask"))
    try:
        with caplog.at_level("WARNING"):
            assert set_threads(4) == 1
        assert torch.get_num_threads() == 1
        assert "4 threads asked for, but the affinity mask allows 1 CPUs: using 1" in caplog.text
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(
    not shutil.which("taskset") or os.cpu_count() < 2, reason="needs taskset, 2 CPUs"
)
def test_a_job_pinned_to_one_cpu_trains_on_one_thread():
    """The real affinity mask, set by taskset as SLURM's cpuset would."""
    code = (
        "import torch; from fashion_cnn.training.device import set_threads, usable_cpus; "
        "print(usable_cpus()[0], set_threads(8), torch.get_num_threads())"
    )
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **PYTHONPATH},
        check=True,
    )
    assert result.stdout.split() == ["1", "1", "1"]


# A CNN training step at the chapter's batch size, counted in page faults (ru_minflt) after the
# first steps have grown the heap; prints the allocator setting's description and the median of
# 20 steps' faults (a step that still grows the heap once, as one in a few runs on the AMX Xeon
# does with ~400 faults, is not what "every step" means).
FAULTS_PER_STEP = """
import resource, sys, torch
from fashion_cnn.training.device import keep_freed_memory
from fashion_cnn.models.catalog import build_model
done = keep_freed_memory(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model("cnn", {"output_softmax": False}).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), 1e-3)
images, labels = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
for _ in range(5):
    step()
counts = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(done)
print(sorted(counts)[len(counts) // 2])
"""


def _faults_per_step(setting: str) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP, setting],
        capture_output=True,
        text=True,
        env={**os.environ, **PYTHONPATH},
        check=True,
    )
    done, faults = result.stdout.strip().splitlines()[-2:]
    return done, float(faults)


@pytest.mark.slow
@pytest.mark.skipif(
    sys.platform != "linux" or __import__("platform").libc_ver()[0] != "glibc",
    reason="engine.allocator acts on glibc's malloc only",
)
def test_the_engine_allocator_stops_the_page_faults_of_every_step():
    """Issue 14: with glibc's defaults every CNN step handed its activations back to the kernel
    and faulted them in again (2,800-4,400 page faults per step at batch 64, about a fifth of the
    step's time on 2-core EPYC and Xeon machines). engine.allocator: auto keeps freed memory for
    reuse; each setting runs in a fresh process, since mallopt is process-wide."""
    system_done, system = _faults_per_step("system")
    auto_done, auto = _faults_per_step("auto")
    assert system_done.startswith("system malloc defaults")
    assert auto_done == "glibc malloc keeps freed memory (trim and mmap thresholds 1 GiB)"
    assert system > 500, f"glibc's defaults faulted only {system:.0f} times per step"
    assert auto < 20, f"{auto:.0f} page faults per step with engine.allocator: auto"
