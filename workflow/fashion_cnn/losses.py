"""Training losses: the chapter's cross-entropy, and FixMatch's consistency loss for batches that
carry unlabelled images (``batches.SemiSupervisedBatches``). Both take ``(outputs, labels)``, so
the one training loop (and its CUDA graph) runs either."""

from __future__ import annotations

import torch
from torch import nn

from fashion_cnn.settings import ExperimentSettings


class ConsistencyLoss(nn.Module):
    """FixMatch (Sohn et al., 2020): cross-entropy on the labelled images (the first
    ``len(labels)`` outputs), plus ``weight`` x the cross-entropy of each unlabelled image's
    strong view against the class its weak view predicts, counted only where that prediction's
    softmax is at least ``threshold`` and averaged over all unlabelled images. The weak view's
    prediction is a target, not a path for gradients. No data-dependent shapes (a multiplied
    mask, not a boolean index), so the step can be one CUDA graph."""

    def __init__(self, threshold: float, weight: float, label_smoothing: float = 0.0):
        super().__init__()
        self.threshold, self.weight = threshold, weight
        self.supervised = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labelled = len(labels)
        weak, strong = outputs[labelled:].chunk(2)
        confidence, pseudo_labels = weak.detach().softmax(dim=1).max(dim=1)
        mask = (confidence >= self.threshold).to(strong.dtype)
        unlabelled = nn.functional.cross_entropy(strong, pseudo_labels, reduction="none")
        return (
            self.supervised(outputs[:labelled], labels) + self.weight * (unlabelled * mask).mean()
        )


def make_loss(experiment: ExperimentSettings) -> nn.Module:
    if experiment.unlabelled_images:
        return ConsistencyLoss(
            experiment.pseudo_label_threshold,
            experiment.unlabelled_weight,
            experiment.label_smoothing,
        )
    return nn.CrossEntropyLoss(label_smoothing=experiment.label_smoothing)
