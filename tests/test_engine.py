"""The training loop: it learns, its checkpoints describe themselves, and it resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, cli, flat, tiny_training_job
from fashion_cnn.config.validation import default_engine_settings
from fashion_cnn.core.errors import UserError
from fashion_cnn.models.architectures.cnn import ChapterCNN
from fashion_cnn.models.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint
from fashion_cnn.models.inference import predict
from fashion_cnn.training.device import Switches, resolve_device
from fashion_cnn.training.engine import _stop_if_diverged, train_model, train_step

# 2,048 real images, 6 epochs of 32 steps: long enough to interrupt, short enough for CI.
RESUME_OVERRIDE = {
    "experiments": {"cnn_baseline": {"train_subset": 2048, "epochs": 6}},
    "run_experiments": ["cnn_baseline"],
}


def test_a_few_steps_lower_the_loss_on_real_images(arrays):
    torch.manual_seed(0)
    model = ChapterCNN()
    images = torch.from_numpy(arrays["train_images"][:64]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(arrays["train_labels"][:64].astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()
    first = loss_function(model(images), labels).item()
    for _ in range(20):
        train_step(model, optimizer, loss_function, images, labels)
    assert loss_function(model(images), labels).item() < 0.7 * first


def test_checkpoint_describes_itself_and_rebuilds_the_model(tmp_path, prepared_data, arrays):
    job = tiny_training_job(tmp_path, prepared_data, train_subset=256, epochs=2)
    state = train_model(job)
    loaded = load_checkpoint(job.model_path)
    assert loaded["format"] == FORMAT and loaded["complete"]
    assert loaded["model"] == {"name": "cnn", "arguments": {"output_softmax": False}}
    assert loaded["config"]["epochs"] == 2 and loaded["seed"] == 42
    assert loaded["progress"]["epoch"] == 2 and len(loaded["progress"]["history"]) == 2
    assert "torch" in loaded["provenance"]["versions"]
    assert set(loaded["optimizer_state"]) == {"state", "param_groups"}
    model = model_from_checkpoint(loaded)
    for key, tensor in state["model_state"].items():
        assert torch.equal(model.state_dict()[key], tensor)
    scores = predict(model, arrays["test_images"][:100], torch.device("cpu"), 50)
    assert scores.shape == (100, 10)
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,train_accuracy") and len(history) == 3


def test_explicit_cuda_without_a_gpu_is_a_clear_error():
    """No GPU here: the contract is that asking for one says so, instead of a CUDA traceback."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_engine_switch_defaults_are_the_measured_ones(monkeypatch):
    """docs/results/notebook.md: channels_last on, fp32, no compile, no CUDA graph on a CPU."""
    cpu = torch.device("cpu")
    automatic = default_engine_settings()
    assert (automatic.channels_last, automatic.precision, automatic.compile) == ("auto",) * 3
    assert automatic.cuda_graph == "auto"
    switches = Switches.resolve(automatic, cpu)
    assert (switches.channels_last, switches.bf16, switches.compile) == (True, False, False)
    assert switches.cuda_graph is False
    monkeypatch.setattr("fashion_cnn.training.device.cpu_flags", lambda: {"avx2", "amx_bf16"})
    chosen = automatic.replace(channels_last=False, precision="bf16", compile=True)
    switches = Switches.resolve(chosen, cpu)
    assert (switches.channels_last, switches.bf16, switches.compile) == (False, True, True)
    assert Switches.resolve(chosen, cpu, precision="fp32").bf16 is False
    assert Switches.resolve(automatic, cpu, precision="bf16").bf16 is True


def test_bf16_on_a_cpu_without_native_bf16_trains_in_fp32_and_says_so(monkeypatch, caplog):
    """Emulated bf16 ran cnn_fast at 55 images/s against 622 in fp32 on an AVX2 EPYC."""
    cpu = torch.device("cpu")
    monkeypatch.setattr("fashion_cnn.training.device.cpu_flags", lambda: {"avx2", "fma"})
    with caplog.at_level("WARNING"):
        switches = Switches.resolve(default_engine_settings(), cpu, precision="bf16")
    assert switches.bf16 is False
    assert "no native bf16" in caplog.text and "trains in fp32" in caplog.text
    monkeypatch.setattr("fashion_cnn.training.device.cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert Switches.resolve(default_engine_settings(), cpu, precision="bf16").bf16 is True


# ----------------------------------------------------------------------------- resume


def _train_command(folder: Path, data: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fashion_cnn",
        "train-model",
        "--configfile",
        str(REPO / "config.yaml"),
        "--config-json",
        json.dumps(RESUME_OVERRIDE),
        "--experiment",
        "cnn_baseline",
        "--data",
        str(data),
        "--model",
        str(folder / "model.pt"),
        "--history",
        str(folder / "history.csv"),
        "--summary",
        str(folder / "model_summary.txt"),
        "--threads",
        "1",
        "--log",
        str(folder / "train.log"),
    ]


def _run_to_end(folder: Path, data: Path) -> subprocess.CompletedProcess:
    # as a job starts where nobody chose a wait policy (the command line chooses it)
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    return subprocess.run(
        _train_command(folder, data), capture_output=True, text=True, timeout=600, env=environment
    )


def _interrupt(folder: Path, data: Path, how: signal.Signals, after_epoch: int) -> int:
    """Start training, wait until ``after_epoch`` is logged, send ``how``; return the exit code."""
    process = subprocess.Popen(
        _train_command(folder, data), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    log = folder / "train.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if log.exists() and f"epoch {after_epoch}/6" in log.read_text():
            break
        if process.poll() is not None:
            raise AssertionError(
                f"training ended before it could be interrupted: {process.communicate()}"
            )
        time.sleep(0.05)
    process.send_signal(how)
    process.communicate(timeout=120)
    return process.returncode


def _weights(folder: Path) -> dict:
    return load_checkpoint(folder / "model.pt")["model_state"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared_data) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = _run_to_end(folder, prepared_data)
    assert result.returncode == 0, result.stderr
    # engine.shared_cores: keep (the default): the job's cores are its own, OpenMP's default policy
    assert "OpenMP wait policy: OpenMP's default (engine.shared_cores: keep" in flat(
        (folder / "train.log").read_text()
    )
    return folder


@pytest.mark.slow
def test_same_seed_twice_gives_identical_weights_and_history(
    tmp_path, prepared_data, uninterrupted
):
    result = _run_to_end(tmp_path, prepared_data)
    assert result.returncode == 0, result.stderr
    reference = _weights(uninterrupted)
    for key, tensor in _weights(tmp_path).items():
        assert torch.equal(tensor, reference[key]), key

    def losses(folder):
        return [line.split(",")[1:3] for line in (folder / "history.csv").read_text().splitlines()]

    assert losses(tmp_path) == losses(uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_interrupted_training_resumes_and_ends_like_an_uninterrupted_run(
    tmp_path, prepared_data, uninterrupted, how
):
    # once epoch 3 is logged, the state of epoch 2 is on disk (a KILL can land between an
    # epoch's log line and its state file)
    code = _interrupt(tmp_path, prepared_data, how, after_epoch=3)
    if how == signal.SIGTERM:
        assert code == 143, "SIGTERM must save and exit non-zero so --retries/requeue continues"
        assert "stopped by SIGTERM" in (tmp_path / "train.log").read_text()
    else:
        assert code == -signal.SIGKILL
    assert not (tmp_path / "model.pt").exists()
    saved = torch.load(tmp_path / "train_state.pt", weights_only=True)["progress"]
    assert 2 <= saved["epoch"] < 6
    if how == signal.SIGKILL:
        assert saved["step"] == 0  # only end-of-epoch states exist after a KILL

    result = _run_to_end(tmp_path, prepared_data)
    assert result.returncode == 0, result.stderr
    expected = f"resuming cnn_baseline from {tmp_path / 'train_state.pt'}: epoch {saved['epoch'] + 1}, step {saved['step']}"
    assert expected in (tmp_path / "train.log").read_text()
    reference = _weights(uninterrupted)
    for key, tensor in _weights(tmp_path).items():
        assert torch.equal(tensor, reference[key]), key
    assert load_checkpoint(tmp_path / "model.pt")["progress"]["epoch"] == 6
    assert not list(tmp_path.glob(".*.partial")), "a partial file outlived the rerun"


@pytest.mark.slow
def test_changed_settings_start_afresh(tmp_path, prepared_data, uninterrupted):
    """A training state written with other settings is not resumed from."""
    for name in ("train_state.pt",):
        (tmp_path / name).write_bytes((uninterrupted / name).read_bytes())
    override = json.loads(json.dumps(RESUME_OVERRIDE))
    override["experiments"]["cnn_baseline"]["epochs"] = 1
    command = _train_command(tmp_path, prepared_data)
    command[command.index("--config-json") + 1] = json.dumps(override)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "written with other settings; starting afresh" in (tmp_path / "train.log").read_text()
    assert load_checkpoint(tmp_path / "model.pt")["progress"]["epoch"] == 1


@pytest.mark.slow
def test_a_finished_state_rewrites_the_outputs_without_training(
    tmp_path, prepared_data, uninterrupted
):
    """Snakemake reruns a finished job when an input was touched and deletes its outputs first:
    the finished state writes them again (history included) instead of training again."""
    (tmp_path / "train_state.pt").write_bytes((uninterrupted / "train_state.pt").read_bytes())
    result = _run_to_end(tmp_path, prepared_data)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "train.log").read_text()
    assert "is already trained; writing its outputs again" in log and " epoch " not in log
    assert (tmp_path / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    reference = _weights(uninterrupted)
    for key, tensor in _weights(tmp_path).items():
        assert torch.equal(tensor, reference[key]), key


@pytest.mark.slow
def test_a_dataset_cache_with_one_changed_label_is_refused(tmp_path, prepared_data, uninterrupted):
    """The cache is checked against the published files' SHA-256 on every load, so a cache edited
    or carried over from other data never trains; the training state is left as it was."""
    state = (uninterrupted / "train_state.pt").read_bytes()
    (tmp_path / "train_state.pt").write_bytes(state)
    with np.load(prepared_data) as arrays:
        changed = dict(arrays)
    changed["train_labels"] = changed["train_labels"].copy()
    changed["train_labels"][0] = (changed["train_labels"][0] + 1) % 10
    data = tmp_path / "changed.npz"
    np.savez(data, **changed)
    result = _run_to_end(tmp_path, data)
    assert result.returncode == 2, result.stderr
    assert "train_labels is not Fashion-MNIST's (checksum mismatch" in flat(result.stderr)
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "train_state.pt").read_bytes() == state


@pytest.mark.slow
def test_a_state_trained_on_other_data_is_not_resumed(tmp_path, prepared_data, uninterrupted):
    """Defence in depth behind the cache check: the resume fingerprint holds the training data's
    hash (here: a state whose recorded hash is not this data's is not resumed)."""
    state = torch.load(uninterrupted / "train_state.pt", weights_only=True)
    state["fingerprint"] = "0" * 16
    torch.save(state, tmp_path / "train_state.pt")
    result = _run_to_end(tmp_path, prepared_data)
    assert result.returncode == 0, result.stderr
    assert "written with other settings; starting afresh" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_a_damaged_state_with_this_runs_settings_is_named(tmp_path, prepared_data, uninterrupted):
    """A state that claims this run's settings but lacks a part is not half-resumed."""
    state = torch.load(uninterrupted / "train_state.pt", weights_only=True)
    state["complete"] = False
    del state["optimizer_state"]
    torch.save(state, tmp_path / "train_state.pt")
    result = _run_to_end(tmp_path, prepared_data)
    assert result.returncode == 2
    message = flat(result.stderr)
    assert "has this run's settings but cannot be resumed from (KeyError" in message
    assert "Delete it to train from the start" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, prepared_data):
    """SGD at learning rate 10 turns the chapter's CNN's loss into NaN within the first epoch:
    training stops there, says why, writes no checkpoint, and an earlier state stays as it was."""
    earlier = b"a state an earlier run left here"
    (tmp_path / "train_state.pt").write_bytes(earlier)
    override = json.loads(json.dumps(RESUME_OVERRIDE))
    override["experiments"]["cnn_baseline"].update(
        train_subset=512, epochs=3, optimizer="sgd", learning_rate=10
    )
    command = _train_command(tmp_path, prepared_data)
    command[command.index("--config-json") + 1] = json.dumps(override)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    message = flat(result.stderr)
    assert (
        "Training of cnn_baseline diverged: the loss became NaN or infinite in epoch 1" in message
    )
    assert "learning_rate = 10, optimizer sgd" in message and "ten times smaller" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "train_state.pt").read_bytes() == earlier
    log = (tmp_path / "train.log").read_text()
    assert "ignoring the unreadable training state" in log  # the garbage state: start afresh
    assert " epoch 1/3" not in log  # no epoch finished


@pytest.mark.slow
def test_train_command_reports_a_missing_dataset(tmp_path):
    result = cli(*_train_command(tmp_path, tmp_path / "missing.npz")[3:])
    assert result.returncode == 2
    assert "Run the prepare_data rule first" in flat(result.stderr)


def test_the_divergence_message_names_bf16_when_it_is_on(tmp_path, prepared_data, monkeypatch):
    """The guard itself, on a NaN running loss: with bf16 autocast on, precision is named too."""
    from fashion_cnn.training.run import start_run

    monkeypatch.setattr(
        "fashion_cnn.training.device.cpu_flags", lambda: {"amx_bf16"}
    )  # bf16 stays on
    job = tiny_training_job(tmp_path, prepared_data, precision="bf16", train_subset=64)
    run = start_run(job)
    assert run.switches.bf16
    _stop_if_diverged(run, torch.tensor(1.5))
    with pytest.raises(UserError) as caught:
        _stop_if_diverged(run, torch.tensor(float("inf")))
    message = " ".join(caught.value.paragraph().split())
    assert "bf16 autocast: set the experiment's precision to fp32" in message
    assert "no training state was saved" in message


def test_a_long_epoch_logs_its_progress(tmp_path, prepared_data, monkeypatch, caplog):
    """An epoch longer than PROGRESS_SECONDS says where it is, how fast and how long is left
    (issue 13: a six-minute epoch on an AVX2 CPU printed nothing)."""
    from fashion_cnn.training import engine

    monkeypatch.setattr(engine, "PROGRESS_SECONDS", 0.0)
    job = tiny_training_job(tmp_path, prepared_data, train_subset=256, epochs=2, batch_size=64)
    with caplog.at_level("INFO", logger="fashion_cnn.training"):
        train_model(job)
    lines = [r.getMessage() for r in caplog.records if ": step " in r.getMessage()]
    assert len(lines) == 8  # every step of 2 epochs of 4 steps
    assert lines[0].startswith("epoch 1/2: step 1/4 ") and lines[-1].startswith(
        "epoch 2/2: step 4/4"
    )
    # and what it did to the C allocator (engine.allocator; tests/test_cpus.py measures it)
    assert any(r.getMessage().startswith("allocator: ") for r in caplog.records)
    assert "images/s  ETA " in lines[0]


# ----------------------------------------------------------------------------- validation split


def test_validation_images_are_the_last_ones_and_never_trained_on(tmp_path, prepared_data, arrays):
    """The first 60,000 - N training images train, the last N validate; the test set is not
    touched. The source the loop draws batches from holds exactly the training part."""
    from fashion_cnn.training.run import start_run

    job = tiny_training_job(tmp_path, prepared_data, train_subset=0, validation_images=5000)
    run = start_run(job)
    assert run.images == run.source.count == 55_000
    trained = run.source.images.squeeze(1).numpy()
    assert np.array_equal(trained, arrays["train_images"][:55_000])
    assert np.array_equal(run.validation[0], arrays["train_images"][55_000:])
    assert np.array_equal(run.validation[1], arrays["train_labels"][55_000:])


def test_validation_is_recorded_every_epoch_and_plotted(tmp_path, prepared_data, arrays):
    from fashion_cnn.evaluation.plots import plot_history, read_history
    from fashion_cnn.models.inference import accuracy_from_scores

    job = tiny_training_job(
        tmp_path, prepared_data, train_subset=512, validation_images=2000, epochs=2, dropout=0.5
    )
    state = train_model(job)
    history = read_history(job.history_path)
    assert history["epoch"] == [1.0, 2.0]
    assert all(0.1 < accuracy < 1 for accuracy in history["valid_accuracy"])
    # the last epoch's figure is the final model's accuracy on those images, in eval mode
    model = model_from_checkpoint(load_checkpoint(job.model_path))
    scores = predict(model, arrays["train_images"][-2000:], torch.device("cpu"), 500)
    assert history["valid_accuracy"][-1] == pytest.approx(
        accuracy_from_scores(scores, arrays["train_labels"][-2000:].astype(np.int64)), abs=1e-6
    )
    assert state["model"]["arguments"]["dropout"] == 0.5
    drawn = plot_history([job.history_path], tmp_path / "curves.png", "dropout")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert drawn == ["training loss", "training accuracy", "validation loss", "validation accuracy"]
    plain = tiny_training_job(tmp_path / "plain", prepared_data, train_subset=64, epochs=1)
    (tmp_path / "plain").mkdir()
    train_model(plain)
    assert "valid_accuracy" not in read_history(plain.history_path)  # no split, no columns


# ----------------------------------------------------------------------------- weight averaging


def test_the_weights_average_is_delivered_and_leaves_training_alone(tmp_path, prepared_data):
    """ema_decay: the checkpoint's model (evaluated, exported) is the moving average; the trained
    weights are exactly those of the same run without it, and kept to resume from."""
    plain = tiny_training_job(tmp_path / "plain", prepared_data, train_subset=256, epochs=2)
    averaged = tiny_training_job(
        tmp_path / "ema", prepared_data, train_subset=256, epochs=2, ema_decay=0.9
    )
    for job in (plain, averaged):
        job.model_path.parent.mkdir()
        train_model(job)
    plain_state = load_checkpoint(plain.model_path)
    ema_state = load_checkpoint(averaged.model_path)
    for key, tensor in plain_state["model_state"].items():
        assert torch.equal(ema_state["training_model_state"][key], tensor), key
    moved = [
        key
        for key, tensor in ema_state["model_state"].items()
        if not torch.allclose(tensor, ema_state["training_model_state"][key])
    ]
    assert len(moved) == len(ema_state["model_state"])  # every weight is an average
    assert int(ema_state["ema_state"]["n_averaged"]) == 2 * 4  # one update per step


def test_the_warmed_up_average_follows_the_first_steps_then_decays_at_ema_decay():
    """ema_warmup: the n-th update after the first (a copy) uses the decay
    min(ema_decay, (1 + n) / (10 + n)), for weights and BatchNorm statistics alike."""
    from fashion_cnn.training.run import moving_average

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=moving_average(0.5, warmup=True), use_buffers=True
    )
    expected = None
    for n in range(12):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        model(torch.randn(4, 3))  # moves the running statistics
        current = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
        if expected is None:
            expected = current
        else:
            decay = min(0.5, (1 + n) / (10 + n))
            expected = [
                e * decay + c * (1 - decay) if e.is_floating_point() else c
                for e, c in zip(expected, current, strict=True)
            ]
        averaged.update_parameters(model)
    got = [*averaged.module.parameters(), *averaged.module.buffers()]
    for want, have in zip(expected[:-1], got[:-1], strict=True):  # all but num_batches_tracked
        assert torch.allclose(have, want, atol=1e-5)
    plain = torch.optim.swa_utils.AveragedModel(
        torch.nn.Linear(3, 2), multi_avg_fn=moving_average(0.5, warmup=False)
    )
    assert plain.multi_avg_fn.__qualname__.startswith("get_ema_multi_avg_fn")


ALIGNED_FIXMATCH = {
    "model": "cnn_bn",
    "width": 8,
    "train_subset": 64,
    "unlabelled_images": 256,
    "unlabelled_ratio": 2,
    "batch_size": 32,
    "pseudo_label_threshold": 0.5,
    "distribution_alignment": True,
}


SELF_ADAPTIVE_FIXMATCH = dict(ALIGNED_FIXMATCH, pseudo_label_thresholds="self_adaptive")
MUON = {"optimizer": "muon", "lr_schedule": "onecycle", "learning_rate": 0.01}


@pytest.mark.parametrize(
    "extra",
    [{}, {"ema_warmup": True}, ALIGNED_FIXMATCH, SELF_ADAPTIVE_FIXMATCH, MUON],
    ids=["ema", "ema_warmup", "fixmatch_aligned", "fixmatch_self_adaptive", "muon_onecycle"],
)
def test_a_run_with_weight_averaging_resumes_exactly(
    tmp_path, prepared_data, monkeypatch, caplog, extra
):
    """Stopped after epoch 1 and resumed, a run ends bit-identical to one that never stopped:
    the weights, their average, (fixmatch_aligned) distribution alignment's running class
    shares, (fixmatch_self_adaptive) the thresholds' running confidences and (muon_onecycle) Muon's
    momentum and the one-cycle schedule's momentum all come back from the training state."""
    import fashion_cnn.training.engine as engine

    changes = {
        "train_subset": 256,
        "epochs": 3,
        "ema_decay": 0.95,
        "augmentation": "flip",
        **extra,
    }
    whole = tiny_training_job(tmp_path / "whole", prepared_data, **changes)
    whole.model_path.parent.mkdir()
    train_model(whole)

    resumed = tiny_training_job(tmp_path / "resumed", prepared_data, **changes)
    resumed.model_path.parent.mkdir()
    original = engine._train_one_epoch

    def stop_after_the_first_epoch(run, sigterm):
        if run.progress.epoch == 1:
            raise KeyboardInterrupt("stopped after epoch 1")
        original(run, sigterm)

    monkeypatch.setattr(engine, "_train_one_epoch", stop_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model(resumed)
    monkeypatch.setattr(engine, "_train_one_epoch", original)
    with caplog.at_level("INFO"):
        train_model(resumed)
    assert "resuming cnn_baseline" in caplog.text and "epoch 2, step 0" in caplog.text
    expected, got = load_checkpoint(whole.model_path), load_checkpoint(resumed.model_path)
    for part in ("model_state", "training_model_state", "loss_state"):
        for key, tensor in expected[part].items():
            assert torch.equal(got[part][key], tensor), (part, key)
    if extra.get("distribution_alignment"):
        shares = expected["loss_state"]["predicted_shares"]
        assert not torch.allclose(shares, torch.full_like(shares, 0.1))  # it moved
    if extra.get("pseudo_label_thresholds"):
        confidence = expected["loss_state"]["thresholds.class_confidence"]
        assert not torch.allclose(confidence, torch.full_like(confidence, 0.1))  # it moved


@pytest.mark.slow
def test_vit_b16_trains_through_the_loop_from_the_offline_fallback(tmp_path, prepared_data):
    """The pretrained ViT's whole path on a CPU, small: torchvision's URL fails here (no
    internet), the run goes on from random init, flagged, at 32x32 (position embeddings for 2x2
    patches); the checkpoint rebuilds the model. (Not in the tiny workflow: evaluating an 86M
    parameter model on the 10,000 test images costs minutes on 2 cores.)"""
    from fashion_cnn.models.weights import fetch_imagenet_weights

    status = tmp_path / "vit_b16_imagenet.json"
    fetch_imagenet_weights(tmp_path / "weights", status, False, model="vit_b16")
    job = tiny_training_job(
        tmp_path,
        prepared_data,
        model="vit_b16",
        weights="imagenet",
        image_size=32,
        train_subset=32,
        epochs=1,
        batch_size=16,
        optimizer="adamw",
        learning_rate=1.0e-4,
    )
    job.weights_input = str(status)
    state = train_model(job)
    assert state["weights_source"] == "random init (ImageNet weights unavailable)"
    assert state["model"] == {
        "name": "vit_b16",
        "arguments": {"output_softmax": False, "image_size": 32},
    }
    model = model_from_checkpoint(load_checkpoint(job.model_path))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
