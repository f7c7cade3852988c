"""Test-set evaluation: accuracy, per-class accuracy, confusion matrix, the classification report
and calibration (``trust``), metrics.json, and the test set's scores for the figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashion_cnn import CLASS_NAMES
from fashion_cnn.config.settings import EvaluationSettings, ExperimentSettings
from fashion_cnn.core import provenance
from fashion_cnn.core.files import atomic_path, write_csv, write_json
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.evaluation.trust import held_out, log_probabilities, trust_record
from fashion_cnn.models.catalog import parameter_count
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from fashion_cnn.models.inference import predict
from fashion_cnn.training.device import resolve_device, set_threads

log = logging.getLogger(__name__)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(
        classes, classes
    )


@dataclass(frozen=True)
class EvaluationOutputs:
    """The files one evaluation writes."""

    metrics: Path
    confusion_csv: Path
    per_class_csv: Path
    scores: Path  # the test set's log-probabilities and labels (.npz)


@dataclass(frozen=True)
class AssessmentOptions:
    """What the evaluation asks beyond accuracy (the config's ``assessment`` section)."""

    calibration_bins: int = 15
    temperature_images: int = 5000


def evaluate_model(
    checkpoint_path: Path,
    data_path: Path,
    outputs: EvaluationOutputs,
    *,
    device_spec: str = "auto",
    batch_size: int = 1000,
    threads: int = 1,
    assessment: AssessmentOptions = AssessmentOptions(),
) -> dict:
    """Score the test set with the checkpoint's model and its test-time views; write the
    metrics (with the classification report and calibration), the confusion matrix, per-class
    accuracy and the test set's scores. Returns the metrics."""
    set_threads(threads)
    device = resolve_device(device_spec)
    checkpoint, model = load_trained(checkpoint_path)
    arrays = load_prepared(data_path)
    labels = arrays["test_labels"].astype(np.int64)
    experiment = ExperimentSettings.from_dict(checkpoint["config"])
    views = experiment.evaluation
    # a Softmax head (the chapter's exact model) outputs probabilities, not scores
    softmax_head = experiment.model.output_softmax
    log_probs = scorer(model, device, batch_size, views, softmax_head=softmax_head)
    started = time.perf_counter()
    test_scores = log_probs(arrays["test_images"])
    seconds = time.perf_counter() - started
    matrix = confusion_matrix(labels, test_scores.argmax(axis=1))
    held = held_out(experiment, assessment.temperature_images, len(arrays["train_labels"]))

    def held_out_scores() -> tuple[np.ndarray, np.ndarray]:
        fit = held.fit
        return log_probs(arrays["train_images"][fit]), arrays["train_labels"][fit].astype(np.int64)

    metrics = {
        **_test_metrics(checkpoint, experiment, model, matrix),
        **trust_record((test_scores, labels), held, held_out_scores, assessment.calibration_bins),
        "training": _training_record(checkpoint),
        "evaluation": {"seconds": seconds, **views.as_dict()},
        "seed": checkpoint["seed"],
        "config": experiment.as_dict(),
        "engine": checkpoint["engine"],
        "provenance": provenance.provenance(device),
    }
    _write_tables(matrix, outputs)
    write_scores(outputs.scores, test_scores, labels)
    write_json(outputs.metrics, metrics)
    log.info(
        "%s: test accuracy %.2f%% on %d images (%.1f s)",
        checkpoint["experiment"],
        100 * metrics["test_accuracy"],
        len(labels),
        seconds,
    )
    return metrics


def scorer(
    model: nn.Module,
    device: torch.device,
    batch_size: int,
    views: EvaluationSettings,
    *,
    softmax_head: bool,
) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> log-probabilities (N, 10) with the experiment's test-time views (whose
    mean softmax is a probability, as a Softmax head's output is)."""
    averaged = views.test_time_flip or bool(views.test_time_shift) or softmax_head

    def log_probs(images: np.ndarray) -> np.ndarray:
        scores = predict(
            model,
            images,
            device,
            batch_size,
            test_time_flip=views.test_time_flip,
            test_time_shift=views.test_time_shift,
        )
        return log_probabilities(scores.numpy(), averaged)

    return log_probs


def _test_metrics(
    checkpoint: dict, experiment: ExperimentSettings, model: nn.Module, matrix: np.ndarray
) -> dict:
    """What the test set says: accuracy overall and per class, beside the report's labels."""
    per_class = matrix.diagonal() / matrix.sum(axis=1)
    return {
        "experiment": checkpoint["experiment"],
        "description": experiment.description,
        "test_accuracy": float(matrix.trace() / matrix.sum()),
        "test_images": int(matrix.sum()),
        "chapter_accuracy": experiment.chapter_accuracy,
        "per_class_accuracy": {
            name: float(value) for name, value in zip(CLASS_NAMES, per_class, strict=True)
        },
        "parameters": parameter_count(model),
        "weights_source": checkpoint["weights_source"],
    }


def _training_record(checkpoint: dict) -> dict:
    """How the checkpoint was trained, from its own record."""
    history = checkpoint["progress"]["history"]
    return {
        "epochs": checkpoint["progress"]["epoch"],
        "images": checkpoint["training_images"],
        "seconds": checkpoint["progress"]["training_seconds"],
        "images_per_s": _mean_rate(history),
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "final_train_accuracy": history[-1]["train_accuracy"] if history else None,
        "precision": checkpoint["precision"],
        "device": checkpoint["provenance"].get("device"),
        "provenance": checkpoint["provenance"],
    }


def _write_tables(matrix: np.ndarray, outputs: EvaluationOutputs) -> None:
    write_csv(
        outputs.confusion_csv,
        ["true \\ predicted", *CLASS_NAMES],
        [[CLASS_NAMES[i], *row] for i, row in enumerate(matrix.tolist())],
    )
    per_class = matrix.diagonal() / matrix.sum(axis=1)
    write_csv(
        outputs.per_class_csv,
        ["class", "accuracy", "test_images"],
        [
            [n, float(a), int(c)]
            for n, a, c in zip(CLASS_NAMES, per_class, matrix.sum(axis=1), strict=True)
        ],
    )


def write_scores(path: Path, log_probs: np.ndarray, labels: np.ndarray) -> None:
    """The test set's log-probabilities (float32) and labels, for the figures drawn later."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, log_probs=log_probs.astype(np.float32), labels=labels.astype(np.uint8))


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as scores:
        return scores["log_probs"], scores["labels"].astype(np.int64)


def load_trained(checkpoint_path: Path) -> tuple[dict, nn.Module]:
    """A checkpoint and the model it rebuilds (a clear error for a bad file)."""
    checkpoint = load_checkpoint(checkpoint_path)
    return checkpoint, model_from_checkpoint(checkpoint, str(checkpoint_path))


def _mean_rate(history: list[dict]) -> float | None:
    """Training images per second over the whole run (images / time, not a mean of rates)."""
    if not history:
        return None
    seconds = sum(row["epoch_seconds"] for row in history)
    images = sum(row["images_per_s"] * row["epoch_seconds"] for row in history)
    return images / seconds if seconds else None
