"""The training step as one CUDA graph (fashion_cnn.training.graphs, engine.cuda_graph).

The graph itself needs a CUDA GPU: those tests are skipped on CPU machines (CI has none) and run
in the prepared GPU session (docs/gpu_session.sh), where they compare the replayed step with the
eager one on real images. On a CPU the contract is tested: when graphs are used, when they are
refused, and what a user who asks for one where it cannot work is told.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import flat
from fashion_cnn.config.checks import graph_unsupported as unsupported
from fashion_cnn.config.validation import default_engine_settings
from fashion_cnn.core.errors import UserError
from fashion_cnn.models.architectures.cnn import ChapterCNN
from fashion_cnn.training.device import Switches
from fashion_cnn.training.graphs import GraphedStep

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_which_recipes_can_be_one_graph():
    assert unsupported("adam", "constant") is None
    assert unsupported("adamw", "cosine") is None
    assert "sgd" in unsupported("sgd", "constant")
    assert "onecycle" in unsupported("adam", "onecycle")


def test_auto_uses_no_graph_on_a_cpu_and_asking_for_one_there_is_a_clear_error():
    cpu = torch.device("cpu")
    engine = default_engine_settings()
    assert Switches.resolve(engine, cpu).cuda_graph is False
    with pytest.raises(UserError) as error:
        Switches.resolve(engine.replace(cuda_graph=True), cpu)
    message = flat(str(error.value))
    assert "cannot be one CUDA graph" in message and "the device is cpu" in message
    assert "Set engine.cuda_graph to auto" in message


def test_a_recipe_a_graph_cannot_hold_is_refused_by_name(monkeypatch):
    """The decision does not need a GPU: pretend one is there."""
    cuda = torch.device("cuda")
    monkeypatch.setattr("fashion_cnn.training.device.native_bf16", lambda device: True)
    engine = default_engine_settings()
    assert Switches.resolve(engine, cuda).cuda_graph is True
    assert Switches.resolve(engine, cuda, optimizer="sgd").cuda_graph is False
    assert Switches.resolve(engine.replace(compile=True), cuda).cuda_graph is False
    with pytest.raises(UserError, match="lr_schedule onecycle"):
        Switches.resolve(engine.replace(cuda_graph=True), cuda, lr_schedule="onecycle")


def _real_batches(arrays, count: int, batch_size: int, device):
    images = torch.from_numpy(arrays["train_images"][:count]).to(device).float().div(255)
    labels = torch.from_numpy(arrays["train_labels"][:count].astype(np.int64)).to(device)
    images = images.unsqueeze(1).contiguous(memory_format=torch.channels_last)
    return [
        (images[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, count, batch_size)
    ]


def _train(arrays, graphed: bool, schedule: bool):
    """Two epochs of 200 real images (3 full batches and one of 8 each), through the graph or
    eagerly, with the same capturable Adam: only the replay differs."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = ChapterCNN().to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=torch.tensor(1e-3, device=device), capturable=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8) if schedule else None
    loss_function = torch.nn.CrossEntropyLoss()
    step = GraphedStep(model, model, optimizer, loss_function, bf16=False, batch_size=64)
    losses = []
    for _ in range(2):
        for images, labels in _real_batches(arrays, 200, 64, device):
            if graphed:
                _, loss = step(images, labels)
            else:
                _, loss = step._eager(images, labels, set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss))
    return model, losses, step


@needs_cuda
@pytest.mark.parametrize("schedule", [False, True])
def test_the_replayed_step_trains_like_the_eager_step(arrays, schedule, monkeypatch):
    # the same convolution algorithms in both runs, so that only the replay can differ
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    eager, eager_losses, _ = _train(arrays, graphed=False, schedule=schedule)
    graphed, graph_losses, step = _train(arrays, graphed=True, schedule=schedule)
    assert step.replays == 6 and step.eager_steps == 2
    # the warm-up steps before capture were undone: the first loss is the untrained model's
    assert graph_losses[0] == pytest.approx(eager_losses[0], rel=1e-6)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    assert sum(graph_losses[4:]) < sum(graph_losses[:4])  # it learns
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        # a tenth of one Adam step (lr 1e-3): the same training, not merely a similar one
        difference = (a.float() - b.float()).abs().max().item()
        assert difference < 1e-4, f"{name} differs by {difference:.2e}"


@needs_cuda
def test_training_through_the_engine_with_a_graph(tmp_path, prepared_data, caplog):
    from conftest import tiny_training_job
    from fashion_cnn.training.engine import train_model

    job = tiny_training_job(tmp_path, prepared_data, train_subset=500, epochs=2)
    job.engine = job.engine.replace(device="cuda", cuda_graph=True)
    with caplog.at_level("INFO"):
        state = train_model(job)
    assert "CUDA graph: the training step captured for batches of 64" in caplog.text
    history = state["progress"]["history"]
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]


def test_a_saved_learning_rate_is_resumed_as_the_kind_this_run_steps():
    """A state saved by a CUDA-graph run holds its lr as a tensor; a CPU run resuming it needs
    a number (Adam's foreach step refuses a tensor lr), and the other way round."""
    from fashion_cnn.training.optim import set_learning_rate_kind

    model = ChapterCNN()
    saved = torch.optim.Adam(model.parameters(), lr=torch.tensor(2e-3))
    resumed = torch.optim.Adam(model.parameters(), lr=1e-3)
    resumed.load_state_dict(saved.state_dict())
    set_learning_rate_kind(resumed, None)
    assert resumed.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert not torch.is_tensor(resumed.param_groups[0]["lr"])
    set_learning_rate_kind(resumed, torch.device("cpu"))
    assert torch.is_tensor(resumed.param_groups[0]["lr"])
