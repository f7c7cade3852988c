"""Semi-supervised training (500 labels and the rest unlabelled): the batches, FixMatch's
consistency loss, and the promise that the unlabelled images' labels never reach the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_training_job, weights_with_the_unlabelled_labels_changed
from fashion_cnn.data.augment import get_policy
from fashion_cnn.evaluation.plots import plot_history
from fashion_cnn.models.catalog import build_model
from fashion_cnn.training.batches import SemiSupervisedBatches
from fashion_cnn.training.engine import train_model
from fashion_cnn.training.losses import (
    ConsistencyLoss,
    SelfAdaptiveThresholds,
    WeakViewsWithoutGradients,
)
from fashion_cnn.training.run import start_run

SEMI = {
    "model": "cnn_bn",
    "width": 8,
    "train_subset": 64,
    "unlabelled_images": 512,
    "unlabelled_ratio": 2,
    "augmentation": "flip",
    "epochs": 2,
    "batch_size": 32,
    "pseudo_label_threshold": 0.5,
}


def test_the_loss_is_cross_entropy_plus_confident_pseudo_labels():
    labels = torch.tensor([3, 1])
    # two labelled rows, then two unlabelled images: weak views, then strong views
    weak = torch.tensor([[0.0] * 9 + [8.0], [0.0] * 10])  # confident class 9; uniform
    strong = torch.randn(2, 10, requires_grad=True)
    labelled = torch.randn(2, 10, requires_grad=True)
    weak = weak.clone().requires_grad_(True)
    outputs = torch.cat([labelled, weak, strong])
    loss = ConsistencyLoss(threshold=0.95, weight=2.0)(outputs, labels)
    expected = torch.nn.functional.cross_entropy(labelled, labels) + 2.0 * (
        torch.nn.functional.cross_entropy(strong[:1], torch.tensor([9])) / 2
    )  # the uniform one is below the threshold: masked, but still counted in the mean
    assert torch.allclose(loss, expected)
    loss.backward()
    assert weak.grad is None or torch.all(weak.grad == 0)  # a target, not a path for gradients
    assert torch.all(strong.grad[1] == 0) and torch.any(strong.grad[0] != 0)


def test_the_loss_counts_the_pseudo_labels_that_passed_until_asked():
    loss_function = ConsistencyLoss(threshold=0.95, weight=1.0)
    weak = torch.tensor([[0.0] * 9 + [8.0], [0.0] * 10, [9.0] + [0.0] * 9])  # 2 of 3 confident
    outputs = torch.cat([torch.randn(1, 10), weak, torch.randn(3, 10)])
    loss_function(outputs, torch.tensor([0]))
    loss_function(outputs, torch.tensor([0]))
    assert loss_function.take_pseudo_label_rate() == pytest.approx(2 / 3)
    assert np.isnan(loss_function.take_pseudo_label_rate())  # the counts start again
    assert loss_function.state_dict() == {}  # nothing of it in a checkpoint


def test_distribution_alignment_gives_an_under_predicted_class_more_pseudo_labels():
    """distribution_alignment: the running class shares move toward the weak views' mean
    softmax, and each softmax is divided by them and renormalised before the threshold: a
    prediction split between a class the model over-predicts and one it under-predicts goes to
    the under-predicted one. Without it the loss has no such state (older checkpoints load)."""
    loss = ConsistencyLoss(threshold=0.5, weight=1.0, align_classes=3)
    loss.predicted_shares.copy_(torch.tensor([0.6, 0.2, 0.2]))
    weak = torch.tensor([[0.55, 0.40, 0.05], [0.10, 0.10, 0.80]]).log()
    strong = torch.zeros(2, 3, requires_grad=True)
    outputs = torch.cat([torch.zeros(1, 3), weak, strong])
    momentum = ConsistencyLoss.ALIGNMENT_MOMENTUM
    shares = momentum * torch.tensor([0.6, 0.2, 0.2]) + (1 - momentum) * weak.softmax(1).mean(0)
    aligned = weak.softmax(1) / shares
    aligned = aligned / aligned.sum(1, keepdim=True)
    assert torch.allclose(loss.pseudo_label_probabilities(weak), aligned)
    assert torch.allclose(loss.predicted_shares, shares)
    assert weak.softmax(1).argmax(1).tolist() == [0, 2]
    assert aligned.argmax(1).tolist() == [1, 2]
    loss.predicted_shares.copy_(torch.tensor([0.6, 0.2, 0.2]))
    loss(outputs, torch.tensor([0])).backward()
    # both pseudo-labels passed 0.5 after alignment; class 1 is the first image's target
    assert int(loss.confident) == 2
    strong_gradient = strong.grad[0]
    assert strong_gradient[1] < 0 < strong_gradient[0]
    plain = ConsistencyLoss(threshold=0.5, weight=1.0)
    assert torch.equal(plain.pseudo_label_probabilities(weak), weak.softmax(1))
    assert "predicted_shares" not in plain.state_dict()
    assert "predicted_shares" in loss.state_dict()


def test_self_adaptive_thresholds_are_lower_for_a_class_the_model_is_less_sure_of():
    """pseudo_label_thresholds: self_adaptive (FreeMatch). The global threshold and each class's
    mean probability start at 1 / classes and move toward this batch's before it is masked; a
    class's threshold is the global one times its mean probability over the largest class's. So
    the same confidence (0.7) passes for a class the model predicts less surely and fails for
    the one it is sure of, and the state is the loss's (a checkpoint keeps it)."""
    keep = SelfAdaptiveThresholds.MOMENTUM
    probabilities = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.15, 0.7, 0.15]])
    thresholds = SelfAdaptiveThresholds(threshold=0.95, classes=3)
    got = thresholds(probabilities)
    mean_confidence = keep / 3 + (1 - keep) * (0.9 + 0.9 + 0.7) / 3
    class_confidence = keep / 3 + (1 - keep) * probabilities.mean(dim=0)
    local = class_confidence / class_confidence.max()
    assert torch.allclose(thresholds.mean_confidence, torch.tensor(mean_confidence))
    assert torch.allclose(got, mean_confidence * local[torch.tensor([0, 0, 1])])
    thresholds.mean_confidence.fill_(0.8)  # as after many confident batches
    thresholds.class_confidence.copy_(torch.tensor([0.6, 0.2, 0.2]))
    loss = ConsistencyLoss(threshold=0.95, weight=1.0, thresholds="self_adaptive", classes=3)
    loss.thresholds.load_state_dict(thresholds.state_dict())
    weak = torch.tensor([[0.7, 0.15, 0.15], [0.15, 0.7, 0.15]]).log()
    strong = torch.zeros(2, 3, requires_grad=True)
    loss(torch.cat([torch.zeros(1, 3), weak, strong]), torch.tensor([0])).backward()
    assert int(loss.confident) == 1  # class 1's threshold about 0.8 x 0.2 / 0.6; class 0's 0.8
    assert torch.all(strong.grad[0] == 0) and torch.any(strong.grad[1] != 0)
    assert set(loss.state_dict()) == {"thresholds.mean_confidence", "thresholds.class_confidence"}
    fixed = ConsistencyLoss(threshold=0.95, weight=1.0)
    assert torch.equal(fixed.thresholds(weak.softmax(1)), torch.full((2,), 0.95))


def test_the_weak_views_cost_a_forward_pass_and_change_nothing_else(arrays):
    """The semi-supervised forward pass (weak views without gradients) gives the whole batch's
    outputs, loss and gradients, for a model whose outputs do not depend on the batch (the
    chapter's CNN; BatchNorm is the one documented difference), and builds no graph for the weak
    views."""
    torch.manual_seed(0)
    model = build_model("cnn", {})
    images = torch.from_numpy(arrays["train_images"][:40]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(arrays["train_labels"][:8].astype("int64"))
    loss_function = ConsistencyLoss(threshold=0.0, weight=1.0)  # every pseudo-label counts
    calls = []  # (images, gradients recorded) of each pass through the model
    model.register_forward_hook(
        lambda _, args, __: calls.append((len(args[0]), torch.is_grad_enabled()))
    )
    gradients, outputs = [], []
    for forward in (model, WeakViewsWithoutGradients(model, unlabelled=16)):
        model.zero_grad()
        outputs.append(forward(images))
        loss_function(outputs[-1], labels).backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    assert calls == [(40, True), (16, False), (24, True)]  # the weak views without a graph
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for full, split in zip(*gradients, strict=True):
        assert torch.allclose(full, split, atol=1e-6)


def test_semi_supervised_runs_train_through_the_weak_views_forward(tmp_path, prepared_data):
    run = start_run(tiny_training_job(tmp_path, prepared_data, **SEMI))
    assert isinstance(run.forward, WeakViewsWithoutGradients)
    assert run.forward.unlabelled == SEMI["unlabelled_ratio"] * SEMI["batch_size"]
    assert run.forward.model is run.model


def test_a_mean_teacher_makes_the_pseudo_labels_in_eval_mode_without_gradients(arrays):
    """pseudo_labels_from: average. The weak views' outputs are the teacher's in eval mode (its
    own BatchNorm statistics, left as they were), even after the loop put it in training mode;
    the labelled and strong views go through the trained model; no gradient reaches the
    teacher."""
    torch.manual_seed(0)
    model, teacher = build_model("cnn_bn", {"width": 8}), build_model("cnn_bn", {"width": 8})
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.mul_(0.5)
    images = torch.from_numpy(arrays["train_images"][:40]).float().div(255).unsqueeze(1)
    statistics = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k}
    forward = WeakViewsWithoutGradients(model, unlabelled=16, teacher=teacher)
    forward.train()  # what the training loop does
    teacher.train()  # what validation leaves behind
    outputs = forward(images)
    loss = ConsistencyLoss(threshold=0.0, weight=1.0)(outputs, torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert all(parameter.grad is not None for parameter in model.parameters())
    for name, tensor in statistics.items():
        assert torch.equal(teacher.state_dict()[name], tensor), name
    with torch.no_grad():
        expected_weak = teacher.eval()(images[8:24])
        model.train()
        expected_rest = model(torch.cat([images[:8], images[24:]]))
    assert torch.allclose(outputs[8:24], expected_weak, atol=1e-6)
    assert torch.allclose(outputs[:8], expected_rest[:8], atol=1e-6)
    assert torch.allclose(outputs[24:], expected_rest[8:], atol=1e-6)
    assert not torch.allclose(outputs[8:24], model.eval()(images[8:24]), atol=1e-3)


def test_a_mean_teacher_run_takes_its_pseudo_labels_from_the_average(tmp_path, prepared_data):
    run = start_run(tiny_training_job(tmp_path, prepared_data, **SEMI, **MEAN_TEACHER))
    assert run.forward._teacher == [run.averaged.module]
    plain = start_run(tiny_training_job(tmp_path / "plain", prepared_data, **SEMI))
    assert plain.forward._teacher == []


def test_batches_hold_the_labelled_images_then_two_views_of_unlabelled_ones(arrays):
    generator = torch.Generator().manual_seed(0)
    unlabelled = arrays["train_images"][100:300]
    source = SemiSupervisedBatches(
        arrays["train_images"][:100],
        arrays["train_labels"][:100],
        unlabelled,
        torch.device("cpu"),
        policy=get_policy("none"),  # weak view = the image itself, to find it below
        strong_policy=get_policy("strong"),
        batch_size=32,
        ratio=3,
        generator=generator,
        channels_last=False,
    )
    batches = list(source.batches(source.new_order(), 0))
    assert len(batches) == len(source) == 4  # epochs are over the labelled images
    images, labels = batches[0]
    assert images.shape == (32 + 2 * 96, 1, 28, 28) and labels.shape == (32,)
    weak, strong = images[32:].chunk(2)
    pool = torch.from_numpy(unlabelled).float().div(255).flatten(1)
    found = (weak.flatten(1)[:, None, :] == pool[None]).all(dim=2).any(dim=1)
    assert torch.all(found)  # every weak view is one of the unlabelled images, exactly
    changed = (weak != strong).flatten(1).any(dim=1)  # the strong view of the same images
    assert float(changed.float().mean()) > 0.95
    last_images, last_labels = batches[-1]
    assert len(last_labels) == 4 and len(last_images) == 4 + 2 * 96


MEAN_TEACHER = {"pseudo_labels_from": "average", "ema_decay": 0.9, "ema_warmup": True}
ALIGNED = {"distribution_alignment": True}
SELF_ADAPTIVE = {"pseudo_label_thresholds": "self_adaptive"}


@pytest.mark.parametrize(
    "teacher",
    [{}, MEAN_TEACHER, ALIGNED, SELF_ADAPTIVE],
    ids=["model", "average", "aligned", "self_adaptive"],
)
def test_the_unlabelled_images_labels_never_reach_training(
    tmp_path, prepared_data, arrays, monkeypatch, teacher
):
    """Train twice: once with the real dataset, once with every label after the labelled subset
    scrambled. The weights must be bit-identical: those labels never reached the loss (with
    pseudo-labels from the model, from its moving average, aligned with the class shares, and
    with self-adaptive thresholds: both running estimates are made from the predictions
    alone)."""
    weights = weights_with_the_unlabelled_labels_changed(
        tmp_path,
        monkeypatch,
        lambda folder: tiny_training_job(folder, prepared_data, **SEMI, **teacher),
        SEMI["train_subset"],
    )
    for key, tensor in weights[0].items():
        assert torch.equal(weights[1][key], tensor), key


def test_the_unlabelled_pool_is_the_images_after_the_labelled_ones(tmp_path, prepared_data, arrays):
    job = tiny_training_job(
        tmp_path, prepared_data, **dict(SEMI, unlabelled_images="all", validation_images=1000)
    )
    run = start_run(job)
    assert run.source.count == 64
    pool = run.source.unlabelled.squeeze(1).numpy()
    assert np.array_equal(pool, arrays["train_images"][64:59_000])  # neither labelled nor held out
    assert not hasattr(run.source, "unlabelled_labels")


def test_semi_supervised_training_learns_and_resumes_like_any_run(tmp_path, prepared_data):
    job = tiny_training_job(tmp_path, prepared_data, **SEMI)
    state = train_model(job)
    history = state["progress"]["history"]
    assert len(history) == 2 and all(np.isfinite(row["train_loss"]) for row in history)
    assert state["config"]["unlabelled_images"] == 512
    assert all(0.0 <= row["pseudo_label_rate"] <= 1.0 for row in history)


def test_the_history_records_each_epochs_share_of_pseudo_labels_that_passed(
    tmp_path, prepared_data
):
    """Threshold 0: every unlabelled image's pseudo-label counts, so the share is exactly 1 in
    every epoch, in the state's history and in the history CSV."""
    job = tiny_training_job(tmp_path, prepared_data, **dict(SEMI, pseudo_label_threshold=0.0))
    history = train_model(job)["progress"]["history"]
    assert [row["pseudo_label_rate"] for row in history] == [1.0, 1.0]
    written = job.history_path.read_text().splitlines()
    assert written[0].endswith(",pseudo_label_rate") and len(written) == 3
    assert all(line.endswith(",1.0") or line.endswith(",1") for line in written[1:])
    drawn = plot_history([job.history_path], tmp_path / "curves.png", "fixmatch")
    assert "pseudo-labels passed" in drawn and (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"train_subset": 0, "unlabelled_images": 100}, "no image is left"),
        (
            {"train_subset": 500, "unlabelled_images": 59_000, "validation_images": 1000},
            "more than",
        ),
        (
            {"train_subset": 500, "unlabelled_images": 100, "pseudo_labels_from": "average"},
            "with ema_decay above 0",
        ),
        (
            {"train_subset": 500, "ema_decay": 0.9, "pseudo_labels_from": "average"},
            "with ema_decay above 0",
        ),
        ({"ema_warmup": True}, "ema_decay is 0"),
        ({"distribution_alignment": True}, "remove distribution_alignment"),
        (
            {"train_subset": 500, "unlabelled_images": 0, "distribution_alignment": True},
            "remove distribution_alignment",
        ),
        ({"pseudo_label_thresholds": "self_adaptive"}, "remove pseudo_label_thresholds"),
        ({"pseudo_label_thresholds": "flexmatch"}, 'choose one of "fixed", "self_adaptive"'),
    ],
)
def test_impossible_splits_are_config_errors(changes, expected):
    from conftest import base_config
    from fashion_cnn.config.validation import validate_config
    from fashion_cnn.core.errors import UserError

    config = base_config()
    config["experiments"]["cnn_baseline"].update(changes)
    with pytest.raises(UserError, match=expected):
        validate_config(config)


def test_both_views_come_from_the_same_unlabelled_images(arrays):
    """With both policies the identity, the weak and strong halves are the same images in the
    same order: each strong view is paired with its own weak view (the pseudo-label's source)."""
    source = SemiSupervisedBatches(
        arrays["train_images"][:64],
        arrays["train_labels"][:64],
        arrays["train_images"][64:1064],
        torch.device("cpu"),
        policy=get_policy("none"),
        strong_policy=get_policy("none"),
        batch_size=32,
        ratio=4,
        generator=torch.Generator().manual_seed(1),
        channels_last=False,
    )
    images, labels = next(iter(source.batches(source.new_order(), 0)))
    weak, strong = images[32:].chunk(2)
    assert torch.equal(weak, strong) and len(weak) == 128


@pytest.mark.parametrize(
    ("changes", "what"),
    [(SEMI, "unlabelled images"), ({"train_subset": 64, "steps_per_epoch": 3}, "steps_per_epoch")],
)
def test_unlabelled_images_with_the_chapters_dataloader_pipeline_are_a_clear_error(
    tmp_path, prepared_data, changes, what
):
    from fashion_cnn.core.errors import UserError

    job = tiny_training_job(tmp_path, prepared_data, **changes)
    job.engine = job.engine.replace(data_pipeline="dataloader")
    with pytest.raises(UserError, match=f"{what}, which only the device data pipeline draws"):
        train_model(job)
    assert not job.model_path.exists() and not job.state_path.exists()


def test_a_fixed_number_of_steps_per_epoch_cycles_through_the_labelled_images(
    tmp_path, prepared_data
):
    """steps_per_epoch: the epoch has that many full batches whatever train_subset is, each
    labelled image drawn once before any is drawn twice; the schedule and history follow."""
    job = tiny_training_job(
        tmp_path,
        prepared_data,
        **dict(SEMI, train_subset=40, steps_per_epoch=5, epochs=2, lr_schedule="cosine"),
    )
    run = start_run(job)
    assert len(run.source) == 5
    order = run.source.new_order()
    assert len(order) == 5 * SEMI["batch_size"]  # 160 draws of 40 images: four whole orders
    for start in range(0, 160, 40):
        assert sorted(order[start : start + 40].tolist()) == list(range(40))
    batches = list(run.source.batches(order, 0))
    assert len(batches) == 5 and all(len(labels) == SEMI["batch_size"] for _, labels in batches)
    history = train_model(job)["progress"]["history"]
    assert len(history) == 2  # the cosine schedule spans the 10 steps: it ends at its floor
    assert history[-1]["learning_rate"] < 1e-3 * job.experiment.training.learning_rate
    bigger = start_run(
        tiny_training_job(
            tmp_path / "more", prepared_data, **dict(SEMI, train_subset=400, steps_per_epoch=5)
        )
    )
    assert len(bigger.source) == 5  # ten times the labels, the same length of training
