"""Shared fixtures: the real Fashion-MNIST files (Debian's dataset-fashion-mnist), the prepared
dataset, and helpers to run the command line and Snakemake as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEBIAN_MIRROR = Path("/usr/share/datasets/fashion-mnist")
CONFIGS = Path(__file__).resolve().parent / "configs"


def copy_checkout(destination: Path) -> Path:
    """The checkout's files (tracked, and untracked ones git does not ignore) copied to
    ``destination``: a checkout to edit or to run from another folder."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, destination / name)
    return destination


@pytest.fixture(scope="session")
def debian_mirror() -> Path:
    if not all((DEBIAN_MIRROR / name).is_file() for name in _raw_names()):
        pytest.fail(
            f"The real Fashion-MNIST files are missing from {DEBIAN_MIRROR}: "
            "apt-get install dataset-fashion-mnist (the README's test command does)."
        )
    return DEBIAN_MIRROR


def _raw_names() -> list[str]:
    from fashion_cnn.data.dataset import FILES

    return [item.filename for item in FILES]


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory, debian_mirror) -> Path:
    """The real dataset, parsed once per session into the cached .npz every step reads."""
    from fashion_cnn.data.dataset import prepare_dataset

    path = tmp_path_factory.mktemp("data") / "fashion_mnist.npz"
    prepare_dataset(debian_mirror, path)
    return path


@pytest.fixture(scope="session")
def arrays(prepared_data):
    from fashion_cnn.data.dataset import load_prepared

    return load_prepared(prepared_data)


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory, prepared_data) -> Path:
    """A model.pt written by train_model (the chapter's CNN, 128 real images, one epoch): the
    starting point of the hand-edited checkpoints the tests make."""
    from fashion_cnn.training.engine import train_model

    folder = tmp_path_factory.mktemp("checkpoint")
    job = tiny_training_job(folder, prepared_data, train_subset=128, epochs=1)
    train_model(job)
    return job.model_path


def edited_checkpoint(source: Path, target: Path, edit) -> Path:
    """A copy of ``source`` changed by ``edit(state)``, as a user with torch.load/save would."""
    import torch

    state = torch.load(source, weights_only=True)
    edit(state)
    torch.save(state, target)
    return target


def base_config() -> dict:
    """config.yaml as the workflow reads it, validated and with defaults filled."""
    from fashion_cnn.config.validation import read_config_file, validate_config

    return validate_config(read_config_file(REPO / "config.yaml"))


def cli(*args, cwd=None, env=None, timeout=600, check=False) -> subprocess.CompletedProcess:
    """Run ``python -m fashion_cnn ARGS`` as the rules do."""
    result = subprocess.run(
        [sys.executable, "-m", "fashion_cnn", *map(str, args)],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fashion_cnn {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake_command() -> list[str]:
    executable = Path(sys.executable).with_name("snakemake")
    return [str(executable)] if executable.exists() else [sys.executable, "-m", "snakemake"]


def snakemake_argv(workdir: Path, *args, configfiles=()) -> list[str]:
    """The command line that runs the real workflow (this checkout's Snakefile) in ``workdir``."""
    return [
        *snakemake_command(),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(REPO / "config.yaml"),
        *map(str, configfiles),
        *map(str, args),
    ]


def snakemake(
    workdir: Path, *args, configfiles=(), timeout=1800, env=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_argv(workdir, *args, configfiles=configfiles),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def tiny_training_job(folder: Path, data: Path, threads: int = 1, **changes):
    """A TrainingJob for the baseline recipe on a few real images (changes override the recipe)."""
    from fashion_cnn.config.settings import EngineSettings, ExperimentSettings
    from fashion_cnn.training.run import TrainingJob

    config = base_config()
    return TrainingJob(
        name="cnn_baseline",
        experiment=ExperimentSettings.from_dict(
            dict(config["experiments"]["cnn_baseline"], **changes)
        ),
        engine=EngineSettings.from_dict(dict(config["engine"], device="cpu")),
        data_path=data,
        model_path=folder / "model.pt",
        history_path=folder / "history.csv",
        summary_path=folder / "model_summary.txt",
        threads=threads,
    )


def weights_with_the_unlabelled_labels_changed(folder: Path, monkeypatch, make_job, labelled: int):
    """Train ``make_job(folder)`` twice, on the real dataset and with every training label after
    the first ``labelled`` changed (permuted, then each moved to the next class); returns the two
    runs' weights. Bit-identical weights: those labels never reached training."""
    import fashion_cnn.data.dataset as data
    import numpy as np
    from fashion_cnn.models.checkpoint import load_checkpoint
    from fashion_cnn.training.engine import train_model

    real = data.load_prepared

    def changed(path):
        loaded = dict(real(path))
        labels = loaded["train_labels"].copy()
        labels[labelled:] = np.random.default_rng(0).permutation(labels[labelled:])
        labels[labelled:] = (labels[labelled:] + 1) % 10
        loaded["train_labels"] = labels
        return loaded

    weights = []
    for name, loader in (("real", real), ("changed", changed)):
        monkeypatch.setattr(data, "load_prepared", loader)
        job = make_job(folder / name)
        job.model_path.parent.mkdir()
        train_model(job)
        weights.append(load_checkpoint(job.model_path)["model_state"])
    return weights


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def link_raw_data(workdir: Path, mirror: Path) -> None:
    """Pre-stage the raw files as a user would (copies: the workflow may replace them)."""
    folder = workdir / "resources" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _raw_names():
        shutil.copyfile(mirror / name, folder / name)


def assert_no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text


def flat(text: str) -> str:
    """Messages are wrapped for the terminal; compare them with whitespace folded."""
    return " ".join(text.split())


# Markers that allow a test to start a Python (or Snakemake) process of its own.
SUBPROCESS_MARKERS = ("slow", "workflow", "slurm")


@pytest.fixture(autouse=True)
def _python_subprocesses_are_slow(request, monkeypatch):
    """A test that starts Python or Snakemake in a process of its own (seconds each: torch's
    import alone) carries the ``slow`` marker, so ``make test-fast`` stays quick: the first such
    start in an unmarked test fails it, naming the fix. Other programs (git, sbatch) are free."""
    if any(request.node.get_closest_marker(name) for name in SUBPROCESS_MARKERS):
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **options):
        program = args[0] if isinstance(args, list | tuple) else str(args).split()[0]
        name = Path(str(program)).name
        if str(program) == sys.executable or name.startswith(("python", "snakemake")):
            pytest.fail(
                f"{request.node.nodeid} starts {name} in a subprocess: mark it "
                "@pytest.mark.slow (make test-fast leaves those out)",
                pytrace=False,
            )
        original(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
