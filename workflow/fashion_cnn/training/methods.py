"""What a training method adds to the one loop: where its batches come from, its loss, the
forward pass its batches need, and the figures it reports each epoch.

``Supervised`` is the chapter's: labelled batches and cross-entropy. ``SemiSupervised`` is
FixMatch's: each labelled batch is followed by unlabelled images seen twice (``batches.
SemiSupervisedBatches``), the loss is ``losses.ConsistencyLoss``, the weak views go through the
model (or its moving average) without gradients, and the history gains ``pseudo_label_rate``.
The loop asks the method and never branches on which it has; ``training_method`` picks it from
the settings (``unlabelled_images`` with a ``train_subset``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.data.augment import get_policy
from fashion_cnn.training.batches import DeviceBatches, LoaderBatches, SemiSupervisedBatches
from fashion_cnn.training.losses import ConsistencyLoss, WeakViewsWithoutGradients

BatchSource = DeviceBatches | LoaderBatches


@dataclass(frozen=True)
class Pipeline:
    """Where and how batches are made: the engine's settings a batch source needs."""

    device: torch.device
    kind: str  # engine.data_pipeline: device or dataloader
    channels_last: bool


class Supervised:
    """The chapter's method: labelled batches, cross-entropy (with label smoothing)."""

    columns: tuple[str, ...] = ()  # what it adds to the history, after the loop's own

    def __init__(self, experiment: ExperimentSettings, name: str = "this experiment"):
        self.experiment, self.name = experiment, name

    def batches(
        self, images: np.ndarray, labels: np.ndarray, unlabelled: np.ndarray, pipeline: Pipeline
    ) -> BatchSource:
        """The device pipeline, or the chapter's DataLoader (no fixed steps_per_epoch there)."""
        experiment, policy = self.experiment, get_policy(self.experiment.data.augmentation)
        training = experiment.training
        if pipeline.kind == "dataloader":
            self._refuse_dataloader("a fixed steps_per_epoch", training.steps_per_epoch)
            return LoaderBatches(
                images,
                labels,
                pipeline.device,
                policy=policy,
                batch_size=training.batch_size,
                seed=experiment.seed,
                channels_last=pipeline.channels_last,
            )
        return DeviceBatches(
            images,
            labels,
            pipeline.device,
            policy=policy,
            batch_size=training.batch_size,
            generator=self._generator(pipeline.device),
            channels_last=pipeline.channels_last,
            steps_per_epoch=training.steps_per_epoch,
        )

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.experiment.training.label_smoothing)

    def forward(
        self, forward: nn.Module, source: BatchSource, average: nn.Module | None
    ) -> nn.Module:
        """The forward pass the loop calls with a batch: the model's own."""
        return forward

    def epoch_figures(self, loss: nn.Module) -> dict[str, float]:
        """The method's own figures for the epoch's history row (``columns``)."""
        return {}

    def describe(self, source: BatchSource) -> str:
        """What the run's first log line adds about the images it trains on."""
        return ""

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.experiment.seed)

    def _refuse_dataloader(self, what: str, used: object) -> None:
        if used:
            raise UserError(
                f"{self.name} trains with {what}, which only the device data pipeline "
                "draws: set engine.data_pipeline to device."
            )


class SemiSupervised(Supervised):
    """FixMatch: labelled batches each followed by unlabelled weak and strong views, the
    consistency loss, pseudo-labels from the model or its moving average (a mean teacher)."""

    columns = ("pseudo_label_rate",)

    def batches(
        self, images: np.ndarray, labels: np.ndarray, unlabelled: np.ndarray, pipeline: Pipeline
    ) -> BatchSource:
        self._refuse_dataloader("unlabelled images", pipeline.kind == "dataloader")
        experiment = self.experiment
        return SemiSupervisedBatches(
            images,
            labels,
            unlabelled,
            pipeline.device,
            policy=get_policy(experiment.data.augmentation),
            strong_policy=get_policy(experiment.semi_supervised.strong_augmentation),
            batch_size=experiment.training.batch_size,
            ratio=experiment.semi_supervised.unlabelled_ratio,
            generator=self._generator(pipeline.device),
            channels_last=pipeline.channels_last,
            steps_per_epoch=experiment.training.steps_per_epoch,
        )

    def loss(self) -> nn.Module:
        settings = self.experiment.semi_supervised
        return ConsistencyLoss(
            settings.pseudo_label_threshold,
            settings.unlabelled_weight,
            self.experiment.training.label_smoothing,
            align_classes=NUM_CLASSES if settings.distribution_alignment else 0,
        )

    def forward(
        self, forward: nn.Module, source: BatchSource, average: nn.Module | None
    ) -> nn.Module:
        """The weak views without gradients, through the average with pseudo_labels_from:
        average (the config refuses that without ema_decay)."""
        assert isinstance(source, SemiSupervisedBatches)
        from_average = self.experiment.semi_supervised.pseudo_labels_from == "average"
        teacher = average if from_average else None
        return WeakViewsWithoutGradients(forward, source.unlabelled_batch, teacher)

    def epoch_figures(self, loss: nn.Module) -> dict[str, float]:
        assert isinstance(loss, ConsistencyLoss)
        return {"pseudo_label_rate": loss.take_pseudo_label_rate()}

    def describe(self, source: BatchSource) -> str:
        assert isinstance(source, SemiSupervisedBatches)
        ratio = self.experiment.semi_supervised.unlabelled_ratio
        return (
            f" and {len(source.unlabelled):,} without labels ({ratio} per labelled image in "
            "each step, seen twice; images/s below counts the labelled ones)"
        )


def training_method(experiment: ExperimentSettings, name: str = "this experiment") -> Supervised:
    """FixMatch when the experiment has images without labels, else the chapter's."""
    method = SemiSupervised if experiment.unlabelled_count() else Supervised
    return method(experiment, name)
