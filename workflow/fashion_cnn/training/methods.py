"""What a training method adds to the one loop: where its batches come from, its loss, the
forward pass its batches need, and the figures it reports each epoch.

``Supervised`` is the chapter's: labelled batches and cross-entropy. ``SemiSupervised`` is
FixMatch's: each labelled batch is followed by unlabelled images seen twice (``batches.
SemiSupervisedBatches``), the loss is ``losses.ConsistencyLoss``, the weak views go through the
model (or its moving average) without gradients, and the history gains ``pseudo_label_rate``.
``SelfTraining`` is Noisy Student's (Xie et al. 2020): a teacher's softmax on the unlabelled
images is their soft target, and the run trains on the labelled and the unlabelled images
together, with its own augmentation as the noise (``teacher_keep`` keeps each class's surest
share of them, ``teacher_hard`` makes the targets the teacher's top class, ``labelled_repeat``
weights the labelled images up).
The loop asks the method and never branches on which it has; ``training_method`` picks it from
the settings (``METHODS``, the first whose ``applies`` holds).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.registry import Registry
from fashion_cnn.data.augment import get_policy
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from fashion_cnn.models.inference import predict_probabilities
from fashion_cnn.training.batches import DeviceBatches, LoaderBatches, SemiSupervisedBatches
from fashion_cnn.training.losses import ConsistencyLoss, WeakViewsWithoutGradients

BatchSource = DeviceBatches | LoaderBatches
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    """Where and how batches are made: the engine's settings a batch source needs."""

    device: torch.device
    kind: str  # engine.data_pipeline: device or dataloader
    channels_last: bool


class Supervised:
    """The chapter's method: labelled batches, cross-entropy (with label smoothing)."""

    columns: tuple[str, ...] = ()  # what it adds to the history, after the loop's own
    fingerprint = ""  # what a resumed state must match beyond the settings and images

    def __init__(
        self,
        experiment: ExperimentSettings,
        name: str = "this experiment",
        teacher: Path | None = None,
    ):
        self.experiment, self.name = experiment, name

    @staticmethod
    def applies(experiment: ExperimentSettings) -> bool:
        return True

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

    @staticmethod
    def applies(experiment: ExperimentSettings) -> bool:
        return bool(experiment.unlabelled_count())

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
            thresholds=settings.pseudo_label_thresholds,
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


class SelfTraining(Supervised):
    """Noisy Student: the teacher's predictions on the unlabelled images (its softmax, with its
    own test-time views) are their soft targets; the run trains on the labelled images (one-hot
    labels) and those together, shuffled as one set, with its own augmentation as the noise.
    The unlabelled images' labels are never given to it; the teacher's model is checked to have
    been trained on the same labelled images."""

    def __init__(
        self,
        experiment: ExperimentSettings,
        name: str = "this experiment",
        teacher: Path | None = None,
    ):
        super().__init__(experiment, name)
        if teacher is None:
            raise UserError(
                f"{name} learns from the teacher {experiment.semi_supervised.teacher}, but no "
                "teacher's model was given: pass --teacher with its model.pt (the workflow "
                "passes the same seed's)."
            )
        if not teacher.is_file():
            raise UserError(
                f"{name}: the teacher's model {teacher} does not exist. Train the teacher "
                f"({experiment.semi_supervised.teacher}) first, or give --teacher its model.pt "
                "(the workflow does both)."
            )
        self.teacher = teacher
        self.fingerprint = hashlib.sha256(teacher.read_bytes()).hexdigest()[:16]
        self.confidence = 0.0

    @staticmethod
    def applies(experiment: ExperimentSettings) -> bool:
        return bool(experiment.semi_supervised.teacher and experiment.unlabelled_count())

    def batches(
        self, images: np.ndarray, labels: np.ndarray, unlabelled: np.ndarray, pipeline: Pipeline
    ) -> BatchSource:
        self._refuse_dataloader("a teacher's soft targets", pipeline.kind == "dataloader")
        settings = self.experiment.semi_supervised
        targets = self._teach(unlabelled, pipeline.device)
        kept = most_confident_per_class(targets, settings.teacher_keep)
        if len(kept) < len(targets):
            log.info(
                "kept the surest %d of %d unlabelled images, each class's threshold: %s",
                len(kept),
                len(targets),
                " ".join(f"{t:.2f}" for t in class_thresholds(targets[kept])),
            )
        targets, unlabelled = targets[kept], unlabelled[kept]
        if settings.teacher_hard:
            targets = np.eye(NUM_CLASSES, dtype=np.float32)[targets.argmax(axis=1)]
        one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
        repeat = settings.labelled_repeat
        return super().batches(
            np.concatenate([*[images] * repeat, unlabelled]),
            np.concatenate([*[one_hot] * repeat, targets]),
            unlabelled[:0],
            pipeline,
        )

    def _teach(self, unlabelled: np.ndarray, device: torch.device) -> np.ndarray:
        """The teacher's probabilities for the unlabelled images (N x classes)."""
        checkpoint = load_checkpoint(self.teacher)
        taught = ExperimentSettings.from_dict(checkpoint["config"])
        student = self.experiment.data
        if (taught.data.train_subset, taught.data.validation_images) != (
            student.train_subset,
            student.validation_images,
        ):
            raise UserError(
                f"The teacher's model {self.teacher} was trained with train_subset "
                f"{taught.data.train_subset} and validation_images {taught.data.validation_images}; "
                f"{self.name} has {student.train_subset} and {student.validation_images}. A "
                "teacher must be trained on the same labelled images: give the model of the "
                f"experiment named in teacher ({self.experiment.semi_supervised.teacher})."
            )
        model = model_from_checkpoint(checkpoint, str(self.teacher))
        started = time.perf_counter()
        probabilities = predict_probabilities(
            model,
            unlabelled,
            device,
            1000,
            test_time_flip=taught.evaluation.test_time_flip,
            test_time_shift=taught.evaluation.test_time_shift,
            softmax_head=taught.model.output_softmax,
        )
        self.confidence = float(probabilities.max(dim=1).values.mean())
        shares = np.bincount(probabilities.argmax(dim=1).numpy(), minlength=NUM_CLASSES)
        log.info(
            "teacher %s labelled %d images in %.1f s: mean confidence %.1f%%; its classes' "
            "shares %s",
            self.teacher,
            len(unlabelled),
            time.perf_counter() - started,
            100 * self.confidence,
            " ".join(f"{100 * share / len(unlabelled):.1f}" for share in shares),
        )
        return probabilities.numpy().astype(np.float32)

    def describe(self, source: BatchSource) -> str:
        assert isinstance(source, DeviceBatches)  # the dataloader pipeline is refused
        settings, labelled = self.experiment.semi_supervised, self.experiment.data.train_subset
        repeat, keep = settings.labelled_repeat, settings.teacher_keep
        count = source.count - labelled * repeat
        return (
            f" ({labelled:,} labelled{f', each {repeat} times' if repeat > 1 else ''}, {count:,} "
            f"with the {'hard' if settings.teacher_hard else 'soft'} targets of the teacher "
            f"{settings.teacher}{f', the surest {keep:.0%} of each class' if keep < 1 else ''}, "
            f"its mean confidence on all of them {100 * self.confidence:.1f}%)"
        )


def class_thresholds(probabilities: np.ndarray) -> list[float]:
    """The lowest confidence among each class's images (by top class; 1 for a class with none)."""
    top, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    return [
        float(confidence[top == label].min()) if (top == label).any() else 1.0
        for label in range(probabilities.shape[1])
    ]


def most_confident_per_class(probabilities: np.ndarray, share: float) -> np.ndarray:
    """The indices (ascending) of the images a teacher is surest of, ``share`` of each class by
    its top class (rounded up, so no class it predicts goes empty): each class's confidence
    threshold is its own, and the classes keep their shares of the predictions."""
    top, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    kept = []
    for label in range(probabilities.shape[1]):
        members = np.flatnonzero(top == label)
        surest_first = members[np.argsort(-confidence[members], kind="stable")]
        kept.append(surest_first[: math.ceil(round(share * len(members), 9))])
    return np.sort(np.concatenate(kept))


# The training methods, most specific first: the first whose ``applies`` holds is the run's.
METHODS: Registry[type[Supervised]] = Registry("training method", "teacher")
METHODS.add("self_training", SelfTraining)
METHODS.add("fixmatch", SemiSupervised)
METHODS.add("supervised", Supervised)


def training_method(
    experiment: ExperimentSettings, name: str = "this experiment", teacher: Path | None = None
) -> Supervised:
    """The first method of ``METHODS`` that applies: self-training with a teacher and images
    without labels, FixMatch with images without labels, else the chapter's."""
    method = next(METHODS.get(key) for key in METHODS if METHODS.get(key).applies(experiment))
    return method(experiment, name, teacher)
