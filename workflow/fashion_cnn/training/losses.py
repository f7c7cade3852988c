"""Training losses: the chapter's cross-entropy, and FixMatch's consistency loss for batches that
carry unlabelled images (``batches.SemiSupervisedBatches``). Both take ``(outputs, labels)``, so
the one training loop (and its CUDA graph) runs either; ``WeakViewsWithoutGradients`` is the
forward pass such batches get, so that the weak views cost a forward pass only."""

from __future__ import annotations

import torch
from torch import nn


class ConsistencyLoss(nn.Module):
    """FixMatch (Sohn et al., 2020): cross-entropy on the labelled images (the first
    ``len(labels)`` outputs), plus ``weight`` x the cross-entropy of each unlabelled image's
    strong view against the class its weak view predicts, counted only where that prediction's
    softmax is at least ``threshold`` and averaged over all unlabelled images. The weak view's
    prediction is a target, not a path for gradients. No data-dependent shapes (a multiplied
    mask, not a boolean index), so the step can be one CUDA graph.

    ``confident`` and ``considered`` count, on the device and without a sync, the unlabelled
    images whose pseudo-label passed the threshold and all of them: the engine reads their ratio
    once per epoch (``pseudo_label_rate`` in the history) and sets both back to zero in place
    (a CUDA graph keeps their addresses).

    With ``align_classes`` (distribution alignment, ReMixMatch: Berthelot et al., 2020) each weak
    view's softmax is multiplied by the classes' share in the training set (uniform for
    Fashion-MNIST's 6,000 images a class) over ``predicted_shares``, a running average of the
    weak views' softmax (momentum ``ALIGNMENT_MOMENTUM``, updated in place), and renormalised
    before the threshold and the argmax: a class the model under-predicts gets more
    pseudo-labels, one it over-predicts fewer. ``predicted_shares`` is part of the state dict,
    so a resumed run goes on with it."""

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
    ):
        super().__init__()
        self.threshold, self.weight = threshold, weight
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
        confidence, pseudo_labels = self.pseudo_label_probabilities(weak).max(dim=1)
        passed = confidence >= self.threshold
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
