"""Faults a shared cluster throws at a run: full disks, read-only folders, kills at any moment.

A run that dies leaves nothing half-written and reruns cleanly; a user mistake gets one paragraph.
The disk tests mount small tmpfs file systems, which needs root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import CONFIGS, REPO, assert_no_traceback, cli, flat, snakemake_argv
from fashion_cnn.config.site import visible_gpus
from fashion_cnn.evaluation.evaluate import EvaluationOutputs, evaluate_model
from fashion_cnn.models.checkpoint import load_checkpoint

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def partial_files(folder: Path) -> list[Path]:
    return list(folder.rglob(".*.partial"))


# ----------------------------------------------------------------------------- disks


@pytest.mark.slow
@needs_root
def test_disk_full_while_preparing_the_dataset(tmp_path, debian_mirror):
    with tmpfs(tmp_path / "small", "4m") as small:
        result = cli("prepare-data", "--raw-folder", debian_mirror, "--output", small / "data.npz")
        assert result.returncode == 2
        assert "No space left on the device" in flat(result.stderr)
        assert_no_traceback(result.stderr)
        assert list(small.iterdir()) == []  # neither the output nor a partial file


@pytest.mark.slow
@needs_root
def test_disk_full_while_writing_a_checkpoint(tmp_path, prepared_data):
    override = {
        "experiments": {"resnet18_finetune": {"weights": "none", "train_subset": 64, "epochs": 1}}
    }
    with tmpfs(tmp_path / "small", "20m") as small:  # ResNet-18's state (~130 MB) does not fit
        result = cli(
            "train-model",
            "--configfile",
            REPO / "config.yaml",
            "--config-json",
            json.dumps(override),
            "--experiment",
            "resnet18_finetune",
            "--data",
            prepared_data,
            "--model",
            small / "model.pt",
            "--history",
            small / "history.csv",
            "--summary",
            small / "model_summary.txt",
        )
        assert result.returncode == 2, result.stderr
        assert "No space left on the device" in flat(result.stderr)
        assert_no_traceback(result.stderr)
        assert not (small / "model.pt").exists() and not (small / "train_state.pt").exists()
        assert partial_files(small) == []


@pytest.mark.slow
@needs_root
@pytest.mark.parametrize("what", ["outputs", "log"])
def test_read_only_results_folder(tmp_path, prepared_data, what):
    """Outputs, or the log (opened first, before any step runs), on a read-only file system."""
    with tmpfs(tmp_path / "readonly", "1m", read_only=True) as readonly:
        outputs = readonly if what == "outputs" else tmp_path
        result = cli(
            "plot-samples",
            "--data",
            prepared_data,
            "--grid",
            outputs / "samples.png",
            "--colorbar",
            outputs / "colorbar.png",
            "--log",
            (readonly if what == "log" else tmp_path) / "logs" / "plot_samples.log",
        )
        assert result.returncode == 2
        assert "Cannot write" in flat(result.stderr) and "read-only" in flat(result.stderr)
        assert_no_traceback(result.stderr)
        assert not (outputs / "samples.png").exists()


# ----------------------------------------------------------------------------- kills


def _run_workflow(workdir: Path, *extra) -> subprocess.Popen:
    command = snakemake_argv(
        workdir,
        "--cores",
        "2",
        "--rerun-incomplete",
        # without profiles/default's keep-going, Snakemake stops at a failed job, so each kill
        # leaves work undone for the next
        "--workflow-profile",
        "none",
        *extra,
        configfiles=[CONFIGS / "kills.yaml"],
    )
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _job_processes(session: int) -> dict[int, str]:
    """The fashion_cnn job processes of one Snakemake process group: pid -> subcommand."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if b"fashion_cnn" in words and len(words) > words.index(b"fashion_cnn") + 1:
            found[int(entry.name)] = words[words.index(b"fashion_cnn") + 1].decode()
    return found


def _wait_for_job(process: subprocess.Popen, steps: set[str], seconds: float = 300) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid, running in _job_processes(process.pid).items():
            if running in steps:
                return pid
        if process.poll() is not None:
            raise AssertionError(
                f"the workflow ended before {steps} ran: {process.communicate()[0][-3000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"none of {steps} started within {seconds} s")


def _unlock(workdir: Path) -> None:
    unlock = _run_workflow(workdir, "--unlock")
    unlock.communicate(timeout=120)
    assert unlock.returncode == 0


# Eight kills across the workflow: (steps one of which must be running, what is killed, the target
# asked for). A job dies within 2 s of starting, before it can finish, so every kill finds its step
# still to do; the evaluation and export kills ask for their own output alone, so that Snakemake's
# choice of which job to run first cannot finish one of them before its turn.
AFTER_TRAINING = {"evaluate-model", "export-onnx", "plot-filters", "aggregate-seeds", "summarize"}
EXPERIMENT = "results/cnn_small_augmented"
MODEL, METRICS, ONNX = (
    f"{EXPERIMENT}/seed-42/model.pt",
    f"{EXPERIMENT}/seed-42/metrics.json",
    f"{EXPERIMENT}/model.onnx",
)
KILL_PLAN = [
    ({"train-model"}, "job", MODEL),
    ({"train-model"}, "snakemake", MODEL),
    ({"evaluate-model"}, "job", METRICS),
    ({"evaluate-model"}, "snakemake", METRICS),
    ({"export-onnx"}, "job", ONNX),
    ({"export-onnx"}, "snakemake", ONNX),
    (AFTER_TRAINING, "job", None),
    (AFTER_TRAINING, "snakemake", None),
]


@pytest.mark.workflow
def test_sigkill_at_random_moments_then_rerun_completes(tmp_path):
    """SIGKILL eight times, each at a random moment while a given step runs: either the job itself
    (Snakemake sees it fail) or Snakemake with all its jobs (it leaves incomplete files behind).
    After each kill the workflow is rerun with --rerun-incomplete, as a user would. Then the report,
    killed once. Everything ends valid, with no partial files left."""
    rng = random.Random(20261128)
    workdir = tmp_path / "work"
    killed = []
    for steps, victim, target in KILL_PLAN:
        process = _run_workflow(workdir, *([target] if target else []))
        job = _wait_for_job(process, steps)
        killed.append(_job_processes(process.pid).get(job))
        time.sleep(rng.uniform(0.1, 2.0))
        if victim == "job":
            with contextlib.suppress(ProcessLookupError):
                os.kill(job, signal.SIGKILL)
            process.communicate(timeout=300)  # Snakemake notices the failure and stops
            assert process.returncode != 0
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=60)
            _unlock(workdir)  # what Snakemake's LockException tells the user to do

    assert {"train-model", "evaluate-model", "export-onnx"} <= set(killed), killed

    final = _run_workflow(workdir)
    output = final.communicate(timeout=1200)[0].decode()
    assert final.returncode == 0, output[-4000:]

    report = workdir / "results" / "report.html"
    killed_report = _run_workflow(workdir, "--report", str(report))
    time.sleep(rng.uniform(1, 3))
    os.killpg(killed_report.pid, signal.SIGKILL)
    killed_report.communicate(timeout=60)
    _unlock(workdir)
    rerun = _run_workflow(workdir, "--report", str(report))
    rerun.communicate(timeout=300)
    assert rerun.returncode == 0
    assert report.read_text().rstrip().endswith("</html>")

    results = workdir / "results" / "cnn_small_augmented"
    checkpoint = load_checkpoint(results / "seed-42" / "model.pt")
    assert checkpoint["complete"] and checkpoint["progress"]["epoch"] == 60
    onnx.checker.check_model(onnx.load(str(results / "model.onnx")))
    metrics = json.loads((results / "metrics.json").read_text())
    assert 0 < metrics["test_accuracy"] <= 1
    summary = (workdir / "results" / "summary" / "summary.csv").read_text()
    assert f"{metrics['test_accuracy']}" in summary
    assert partial_files(workdir) == []


# ----------------------------------------------------------------------------- workstation recovery


def _workstation_run(workdir: Path, *extra, configfiles=()) -> subprocess.Popen:
    """Snakemake as a user runs it on a workstation: profiles/default applies, no extra flags."""
    command = snakemake_argv(
        workdir, "--cores", "2", *extra, configfiles=[CONFIGS / "recovery.yaml", *configfiles]
    )
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """Snakemake killed with its training job after two epochs, `--unlock`, then a plain rerun."""
    workdir = tmp_path_factory.mktemp("workstation")
    target = "results/cnn_small_plain/seed-42/model.pt"
    process = _workstation_run(workdir, target)
    _wait_for_job(process, {"train-model"})
    log = workdir / "results" / "logs" / "train_model" / "cnn_small_plain" / "seed-42.log"
    deadline = time.monotonic() + 300
    while not (log.exists() and " epoch  2/40" in log.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, "training did not start"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    unlock = _workstation_run(workdir, "--unlock")
    unlock.communicate(timeout=120)
    rerun = _workstation_run(workdir, target)
    # while the rerun trains, a second Snakemake on the same folder (a second terminal, a shared
    # account) must stop at the lock without touching anything. The training is paused while the
    # second one tries: on a fast CPU it would otherwise finish (and the lock go) first
    training = _wait_for_job(rerun, {"train-model"})
    os.kill(training, signal.SIGSTOP)
    try:
        second = _workstation_run(workdir, target)
        second_output = second.communicate(timeout=300)[0].decode()
    finally:
        os.kill(training, signal.SIGCONT)
    output = rerun.communicate(timeout=900)[0].decode()
    return workdir, rerun.returncode, output, log.read_text(), (second.returncode, second_output)


@pytest.mark.workflow
def test_a_killed_snakemake_reruns_after_unlock_with_the_workstation_profile(killed_then_rerun):
    """docs/robustness.md's recovery: `snakemake --unlock`, then a plain rerun (the workstation
    profile sets rerun-incomplete, like the cluster one); training resumes from its state."""
    workdir, code, output, log, _ = killed_then_rerun
    assert code == 0, output[-3000:]
    assert "IncompleteFilesException" not in output
    assert "resuming cnn_small_plain from" in log
    assert load_checkpoint(workdir / "results" / "cnn_small_plain" / "seed-42" / "model.pt")[
        "complete"
    ]


@pytest.mark.workflow
def test_a_second_snakemake_on_the_same_folder_stops_at_the_lock(killed_then_rerun):
    """Two runs on one results folder at once: the second is refused, the first finishes."""
    _, code, _, _, (second_code, second_output) = killed_then_rerun
    assert second_code != 0
    assert "LockException" in second_output and "--unlock" in second_output
    assert code == 0


@pytest.mark.skipif(visible_gpus() != 0, reason="this machine shows a GPU")
@pytest.mark.workflow
def test_cuda_asked_for_without_a_gpu_removes_no_finished_output(killed_then_rerun, tmp_path):
    """engine.device: cuda changes the training job's settings, so Snakemake would rerun it and
    remove its outputs first; on a machine with no GPU it stops before that, with one paragraph."""
    workdir, code, _, _, _ = killed_then_rerun
    assert code == 0
    model = workdir / "results" / "cnn_small_plain" / "seed-42" / "model.pt"
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    cuda = tmp_path / "cuda.yaml"
    cuda.write_text("engine: {device: cuda}\n")
    process = _workstation_run(workdir, str(model.relative_to(workdir)), configfiles=[cuda])
    output = flat(process.communicate(timeout=300)[0].decode())
    assert process.returncode != 0
    assert "engine.device = cuda, but this machine shows no GPU" in output
    assert "Nothing was run or removed" in output
    assert_no_traceback(output)
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before
    again = _workstation_run(workdir, str(model.relative_to(workdir)), "--dry-run")
    assert "Nothing to be done" in again.communicate(timeout=300)[0].decode()


def _tampered_npz(path: Path) -> None:
    """The dataset cache with one training pixel changed: a valid npz of the right shapes."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["train_images"][0, 0, 0] ^= 0xFF
    np.savez(path, **arrays)


def _tampered_gzip(path: Path) -> None:
    """A raw file re-compressed with one byte of its content changed: a valid gzip."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("edited", "edit", "kept", "reason"),
    [
        (
            "results/data/fashion_mnist.npz",
            _tampered_npz,
            "results/cnn_small_plain/seed-42/model.pt",
            "train_images is not Fashion-MNIST's",
        ),
        (
            "resources/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            _tampered_gzip,
            "results/data/fashion_mnist.npz",
            "is not the published Fashion-MNIST file",
        ),
    ],
    ids=["dataset cache", "raw file"],
)
def test_an_edited_input_stops_snakemake_before_it_removes_what_was_made_from_it(
    killed_then_rerun, edited, edit, kept, reason
):
    """An edited file is newer than what was made from it, so Snakemake would rerun those jobs
    and remove their outputs first; the job would then refuse the file. The check runs before
    any job (onstart) and stops there: the finished outputs stay as they were."""
    workdir, code, _, _, _ = killed_then_rerun
    assert code == 0
    edited, kept = workdir / edited, workdir / kept
    original, times = edited.read_bytes(), (edited.stat().st_atime_ns, edited.stat().st_mtime_ns)
    before = (kept.read_bytes(), kept.stat().st_mtime_ns)
    edit(edited)
    try:
        process = _workstation_run(workdir, "results/cnn_small_plain/seed-42/model.pt")
        output = flat(process.communicate(timeout=300)[0].decode())
    finally:
        edited.write_bytes(original)
        os.utime(edited, ns=times)
    assert process.returncode != 0
    assert reason in output and "Snakemake stopped before any job" in output, output[-3000:]
    assert_no_traceback(output)
    assert (kept.read_bytes(), kept.stat().st_mtime_ns) == before


@pytest.mark.workflow
def test_a_weights_file_that_does_not_fit_stops_snakemake_before_it_removes_the_run(
    killed_then_rerun, tmp_path
):
    """`weights:` pointed at a file made for another model: the changed setting makes Snakemake
    rerun the training (removing its outputs first), and the job would refuse the file. It is
    loaded into the model before any job (onstart), as the job loads it: nothing is removed."""
    workdir, code, _, _, _ = killed_then_rerun
    assert code == 0
    model = workdir / "results" / "cnn_small_plain" / "seed-42" / "model.pt"
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    other = tmp_path / "resnet_weights.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    change = tmp_path / "weights.yaml"
    change.write_text(f"experiments: {{cnn_small_plain: {{weights: {json.dumps(str(other))}}}}}\n")
    process = _workstation_run(workdir, str(model.relative_to(workdir)), configfiles=[change])
    output = flat(process.communicate(timeout=300)[0].decode())
    assert process.returncode != 0
    assert "do not fit model 'cnn'" in output and "Snakemake stopped before any job" in output
    assert_no_traceback(output)
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, prepared_data):
    """Determinism end to end: two trainings with the same seed give the same test metrics."""
    from test_engine import RESUME_OVERRIDE, _run_to_end  # the shared reference recipe

    assert RESUME_OVERRIDE["experiments"]["cnn_baseline"]["epochs"] == 6
    metrics = []
    for run in ("first", "second"):
        folder = tmp_path / run
        folder.mkdir()
        assert _run_to_end(folder, prepared_data).returncode == 0
        metrics.append(
            evaluate_model(
                folder / "model.pt",
                prepared_data,
                EvaluationOutputs(
                    folder / "metrics.json",
                    folder / "confusion.csv",
                    folder / "per_class.csv",
                    folder / "scores.npz",
                ),
                device_spec="cpu",
            )
        )
    assert metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"]
    assert metrics[0]["per_class_accuracy"] == metrics[1]["per_class_accuracy"]
    first, second = (
        np.loadtxt(
            tmp_path / run / "confusion.csv", delimiter=",", skiprows=1, usecols=range(1, 11)
        )
        for run in ("first", "second")
    )
    assert np.array_equal(first, second)
