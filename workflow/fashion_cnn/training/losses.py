"""Training losses: the chapter's cross-entropy, and FixMatch's consistency loss for batches that
carry unlabelled images (``batches.SemiSupervisedBatches``). Both take ``(outputs, labels)``, so
the one training loop (and its CUDA graph) runs either; ``WeakViewsWithoutGradients`` is the
forward pass such batches get, so that the weak views cost a forward pass only."""

from __future__ import annotations

import torch
from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.core.registry import Registry


class Thresholds(nn.Module):
    """Which pseudo-labels count: ``forward(probabilities)`` gives, for each unlabelled image's
    weak view (its softmax, a row of ``probabilities``), the confidence its top class must reach.
    State it keeps is in buffers, updated in place (a resumed run goes on with it; a CUDA graph
    keeps their addresses)."""

    def __init__(self, threshold: float, classes: int):
        super().__init__()
        self.threshold = threshold


# How each pseudo-label's threshold is set: the experiment's pseudo_label_thresholds.
THRESHOLDS: Registry[type[Thresholds]] = Registry(
    "pseudo-label threshold", "pseudo_label_thresholds"
)


@THRESHOLDS.register("fixed")
class FixedThreshold(Thresholds):
    """FixMatch's: ``pseudo_label_threshold`` for every class at every step."""

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.new_full((len(probabilities),), self.threshold)


@THRESHOLDS.register("self_adaptive")
class SelfAdaptiveThresholds(Thresholds):
    """FreeMatch's (Wang et al., 2023), a threshold per class that follows the model: a running
    average of the weak views' top confidence (the global threshold) times each class's running
    mean probability over the largest class's (so a class the model is less sure of gets a lower
    threshold). Both start at 1 / classes and are updated with each batch before it is masked,
    as in FreeMatch; ``pseudo_label_threshold`` is not read. FreeMatch's momentum is 0.999 over
    2^20 steps; ``MOMENTUM`` averages about the last 100 steps instead, as our runs are about
    1,000 times shorter (distribution alignment's horizon). FreeMatch's fairness loss is not
    included."""

    MOMENTUM = 0.99

    mean_confidence: torch.Tensor  # buffers
    class_confidence: torch.Tensor

    def __init__(self, threshold: float, classes: int):
        super().__init__(threshold, classes)
        self.register_buffer("mean_confidence", torch.tensor(1.0 / classes))
        self.register_buffer("class_confidence", torch.full((classes,), 1.0 / classes))

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        keep = self.MOMENTUM
        confidence, predicted = probabilities.max(dim=1)
        self.mean_confidence.mul_(keep).add_(confidence.mean(), alpha=1 - keep)
        self.class_confidence.mul_(keep).add_(probabilities.mean(dim=0), alpha=1 - keep)
        local = self.class_confidence / self.class_confidence.max()
        return self.mean_confidence * local[predicted]


class ConsistencyLoss(nn.Module):
    """FixMatch (Sohn et al., 2020): cross-entropy on the labelled images (the first
    ``len(labels)`` outputs), plus ``weight`` x the cross-entropy of each unlabelled image's
    strong view against the class its weak view predicts, counted only where that prediction's
    softmax is at least ``threshold`` and averaged over all unlabelled images. The weak view's
    prediction is a target, not a path for gradients. No data-dependent shapes (a multiplied
    mask, not a boolean index), so the step can be one CUDA graph.

    ``confident`` and ``considered`` count, on the device and without a sync, the unlabelled
    images whose pseudo-label passed its threshold and all of them: the engine reads their ratio
    once per epoch (``pseudo_label_rate`` in the history) and sets both back to zero in place
    (a CUDA graph keeps their addresses).

    With ``align_classes`` (distribution alignment, ReMixMatch: Berthelot et al., 2020) each weak
    view's softmax is multiplied by the classes' share in the training set (uniform for
    Fashion-MNIST's 6,000 images a class) over ``predicted_shares``, a running average of the
    weak views' softmax (momentum ``ALIGNMENT_MOMENTUM``, updated in place), and renormalised
    before the threshold and the argmax: a class the model under-predicts gets more
    pseudo-labels, one it over-predicts fewer. ``predicted_shares`` is part of the state dict,
    so a resumed run goes on with it.

    ``thresholds`` (a ``THRESHOLDS`` entry, a submodule, so its state is in the state dict too)
    sets each pseudo-label's threshold: FixMatch's fixed one by default."""

    ALIGNMENT_MOMENTUM = 0.99  # about the last 100 steps, ReMixMatch's 128 batches

    confident: torch.Tensor  # buffers
    considered: torch.Tensor
    predicted_shares: torch.Tensor

    def __init__(
        self,
        threshold: float,
        weight: float,
        label_smoothing: float = 0.0,
        align_classes: int = 0,
        *,
        thresholds: str = "fixed",
        classes: int = NUM_CLASSES,
    ):
        super().__init__()
        self.weight = weight
        self.thresholds = THRESHOLDS.get(thresholds)(threshold, classes)
        self.supervised = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.register_buffer("confident", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("considered", torch.zeros((), dtype=torch.long), persistent=False)
        self.aligned = bool(align_classes)
        if self.aligned:
            uniform = torch.full((align_classes,), 1.0 / align_classes)
            self.register_buffer("predicted_shares", uniform)

    def pseudo_label_probabilities(self, weak: torch.Tensor) -> torch.Tensor:
        """The weak views' softmax; with ``align_classes``, first moves the running
        ``predicted_shares`` toward this batch's mean softmax (in place), then aligns with them."""
        probabilities = weak.detach().float().softmax(dim=1)
        if not self.aligned:
            return probabilities
        shares = self.predicted_shares
        shares.mul_(self.ALIGNMENT_MOMENTUM).add_(
            probabilities.mean(dim=0), alpha=1 - self.ALIGNMENT_MOMENTUM
        )
        aligned = probabilities / shares  # x (1 / classes) / shares; the constant cancels below
        return aligned / aligned.sum(dim=1, keepdim=True)

    def take_pseudo_label_rate(self) -> float:
        """The share of unlabelled images whose pseudo-label counted since the last call (NaN
        when none was seen); the counts start again from zero."""
        considered = int(self.considered)
        rate = int(self.confident) / considered if considered else float("nan")
        self.confident.zero_()
        self.considered.zero_()
        return rate

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labelled = len(labels)
        weak, strong = outputs[labelled:].chunk(2)
        probabilities = self.pseudo_label_probabilities(weak)
        confidence, pseudo_labels = probabilities.max(dim=1)
        passed = confidence >= self.thresholds(probabilities)
        self.confident += passed.sum()
        self.considered += len(passed)
        mask = passed.to(strong.dtype)
        unlabelled = nn.functional.cross_entropy(strong, pseudo_labels, reduction="none")
        return (
            self.supervised(outputs[:labelled], labels) + self.weight * (unlabelled * mask).mean()
        )


class WeakViewsWithoutGradients(nn.Module):
    """The model's forward pass for a semi-supervised batch (labelled images, then ``unlabelled``
    weak views, then as many strong views): the weak views under ``torch.no_grad`` (they only
    make pseudo-labels, ``ConsistencyLoss`` never differentiates them), the rest with gradients.
    The outputs come back in the batch's order. Same loss and gradients as one pass over the
    whole batch, except that BatchNorm normalises the weak views by their own statistics; a
    training step costs about a third less (no backward pass through the weak views).

    With a ``teacher`` (pseudo_labels_from: average, the moving average of the weights) the weak
    views go through the teacher instead, in eval mode (its averaged BatchNorm statistics), at
    the same cost: a mean teacher's targets for FixMatch's strong views."""

    def __init__(self, model: nn.Module, unlabelled: int, teacher: nn.Module | None = None):
        super().__init__()
        self.model, self.unlabelled = model, unlabelled
        # not a submodule: the training loop's train() must not reach the teacher
        self._teacher = [teacher] if teacher is not None else []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = self.unlabelled
        with torch.no_grad():
            if self._teacher:
                teacher = self._teacher[0].eval()
                weak = teacher(images[-2 * count : -count])
            else:
                weak = self.model(images[-2 * count : -count])
        trained = self.model(torch.cat([images[: -2 * count], images[-count:]]))
        return torch.cat([trained[:-count], weak, trained[-count:]])
