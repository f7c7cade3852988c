"""GPUs a job was given: none found is one paragraph naming the driver and CUDA versions, never
a silent CPU run; on a workstation with several, each job takes its own.

No GPU exists on the machines these tests run on. The driver is faked where the code reads it:
/proc/driver/nvidia, in a private mount namespace (root), so Snakemake and every job see a
workstation with two GPUs and an NVIDIA driver too old for the image's CUDA 13.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_no_traceback, flat, snakemake_argv, write_config
from fashion_cnn.core.errors import UserError
from fashion_cnn.training.device import claim_gpu, nvidia_driver_version, require_gpu

OLD_DRIVER = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
)
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")


def test_the_driver_version_is_read_from_the_kernel_module(tmp_path):
    version = tmp_path / "version"
    version.write_text(OLD_DRIVER + "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    assert nvidia_driver_version(version) == "535.104.05"
    assert nvidia_driver_version(tmp_path / "missing") is None


@no_gpu_here
def test_a_gpu_given_and_not_found_names_driver_and_cuda(tmp_path):
    version = tmp_path / "version"
    version.write_text(OLD_DRIVER)
    with pytest.raises(UserError) as raised:
        require_gpu("auto", version)
    message = flat(raised.value.paragraph())
    assert f"torch {torch.__version__} is built for CUDA {torch.version.cuda}" in message
    assert "needs an NVIDIA driver >= 580" in message  # torch 2.14.1 here is a CUDA 13.0 build
    assert "this node's NVIDIA driver is 535.104.05" in message
    assert "make image CUDA=12.8" in message and "engine.device: cpu" in message

    with pytest.raises(UserError) as raised:
        require_gpu("auto", tmp_path / "missing")
    assert "no NVIDIA driver is loaded here" in flat(raised.value.paragraph())
    require_gpu("cpu", version)  # the CPU chosen on purpose is no error


CLAIM = """
import sys, time
from pathlib import Path
from fashion_cnn.training.device import claim_gpu
print(claim_gpu(int(sys.argv[1]), Path(sys.argv[2])), flush=True)
time.sleep(float(sys.argv[3]))
"""


def _claimer(count: int, folder: Path, hold: float, **env) -> subprocess.Popen:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")
    }
    environment.update(env, PYTHONPATH=str(REPO / "workflow"))
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(count), str(folder), str(hold)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


@pytest.mark.slow
def test_jobs_on_a_workstation_take_distinct_gpus_until_none_is_free(tmp_path):
    holders, taken = [], []
    for _ in range(2):  # one after the other, each still holding its GPU
        holders.append(_claimer(2, tmp_path, 30))
        taken.append(holders[-1].stdout.readline().strip())
    assert taken == ["0", "1"]
    out, err = _claimer(2, tmp_path, 0).communicate(timeout=60)
    assert out.strip() == "None" and "all 2 GPUs are held" in err
    for holder in holders:
        holder.kill()
        holder.wait()
    # a lock dies with its process: the GPUs are free again
    again = _claimer(2, tmp_path, 0)
    assert again.communicate(timeout=60)[0].strip() == "0"
    # a choice already made (the user's, or SLURM's) is kept
    chosen = _claimer(2, tmp_path, 0, CUDA_VISIBLE_DEVICES="1")
    assert chosen.communicate(timeout=60)[0].strip() == "None"
    on_slurm = _claimer(2, tmp_path, 0, SLURM_JOB_ID="7")
    assert on_slurm.communicate(timeout=60)[0].strip() == "None"
    assert claim_gpu(1, tmp_path) is None  # one GPU: nothing to choose


FAKE_WORKSTATION = """
set -e
mount -t tmpfs fake-nvidia-driver /proc/driver
mkdir -p /proc/driver/nvidia/gpus/0000:01:00.0 /proc/driver/nvidia/gpus/0000:02:00.0
printf '%s' "$FAKE_DRIVER_VERSION" > /proc/driver/nvidia/version
exec "$@"
"""


@pytest.mark.workflow
@no_gpu_here
def test_a_workstation_counts_its_gpus_and_jobs_stop_on_an_old_driver(tmp_path):
    """Snakemake on a machine showing two GPUs: the GPU rules ask for one each, Snakemake has
    two to give, and every job given one that PyTorch cannot use stops with the paragraph."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private mount namespace needs root and unshare (CI runs as root)")
    config = write_config(
        tmp_path / "gpus.yaml",
        textwrap.dedent(
            """\
            run_experiments: [cnn_small_plain]
            data: {mirrors: [file:///usr/share/datasets/fashion-mnist/]}
            experiments:
              cnn_small_plain: {train_subset: 64, epochs: 1, seeds: [1, 2, 3]}
            """
        ),
    )
    workdir = tmp_path / "work"
    targets = [f"results/cnn_small_plain/seed-{seed}/model.pt" for seed in (1, 2, 3)]
    argv = snakemake_argv(workdir, "--cores", "4", *targets, configfiles=[config])
    env = {**os.environ, "FAKE_DRIVER_VERSION": OLD_DRIVER}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", FAKE_WORKSTATION, "sh"]
        + argv,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # (Snakemake 9.27 prints a provided resource as gpu=Resource("gpu", 2))
    assert re.search(r"Provided resources: .*\bgpu=(Resource\(\"gpu\", )?2\b", output), output[
        -3000:
    ]
    trainings = re.findall(r"rule train_model:.*?Shell command: ([^\n]*)", output, re.DOTALL)
    assert len(trainings) == 3 and all("--expect-gpu" in command for command in trainings)
    assert len(re.findall(r"resources: [^\n]*\bgpu=1\b", output)) == 3
    results = workdir / "results"
    for seed in (1, 2, 3):
        log = (
            results / "logs" / "train_model" / "cnn_small_plain" / f"seed-{seed}.log"
        ).read_text()
        assert re.search(r"GPU [01] of 2 taken for this job", log), log
        message = flat(log)
        assert "This job asked for a GPU" in message
        assert "this node's NVIDIA driver is 535.104.05" in message
        assert "needs an NVIDIA driver >= 580" in message
        assert_no_traceback(log)
        folder = results / "cnn_small_plain" / f"seed-{seed}"
        assert not (folder / "model.pt").exists() and not (folder / "train_state.pt").exists()
    assert (results / "data" / "fashion_mnist.npz").is_file()  # the CPU jobs ran as usual
