"""Test-set evaluation: accuracy, per-class accuracy, confusion matrix, metrics.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fashion_cnn import CLASS_NAMES
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core import provenance
from fashion_cnn.core.files import write_csv, write_json
from fashion_cnn.data.dataset import load_prepared
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


def evaluate_model(
    checkpoint_path: Path,
    data_path: Path,
    metrics_path: Path,
    confusion_csv: Path,
    per_class_csv: Path,
    device_spec: str,
    batch_size: int,
    threads: int,
) -> dict:
    threads = set_threads(threads)
    device = resolve_device(device_spec)
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, str(checkpoint_path))
    arrays = load_prepared(data_path)
    images, labels = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    experiment = ExperimentSettings.from_dict(checkpoint["config"])
    started = time.perf_counter()
    scores = predict(
        model,
        images,
        device,
        batch_size,
        experiment.test_time_flip,
        experiment.test_time_shift,
    )
    seconds = time.perf_counter() - started
    predictions = scores.argmax(dim=1).numpy()
    matrix = confusion_matrix(labels, predictions)
    per_class = matrix.diagonal() / matrix.sum(axis=1)
    accuracy = float((predictions == labels).mean())
    history = checkpoint["progress"]["history"]
    metrics = {
        "experiment": checkpoint["experiment"],
        "description": experiment.description,
        "test_accuracy": accuracy,
        "test_images": len(labels),
        "chapter_accuracy": experiment.chapter_accuracy,
        "per_class_accuracy": {
            name: float(value) for name, value in zip(CLASS_NAMES, per_class, strict=True)
        },
        "parameters": parameter_count(model),
        "weights_source": checkpoint["weights_source"],
        "training": {
            "epochs": checkpoint["progress"]["epoch"],
            "images": checkpoint["training_images"],
            "seconds": checkpoint["progress"]["training_seconds"],
            "images_per_s": _mean_rate(history),
            "final_train_loss": history[-1]["train_loss"] if history else None,
            "final_train_accuracy": history[-1]["train_accuracy"] if history else None,
            "precision": checkpoint["precision"],
            "device": checkpoint["provenance"].get("device"),
            "provenance": checkpoint["provenance"],
        },
        "evaluation": {
            "seconds": seconds,
            "test_time_flip": experiment.test_time_flip,
            "test_time_shift": experiment.test_time_shift,
        },
        "seed": checkpoint["seed"],
        "config": experiment.as_dict(),
        "engine": checkpoint["engine"],
        "provenance": provenance.provenance(device),
    }
    write_csv(
        confusion_csv,
        ["true \\ predicted", *CLASS_NAMES],
        [[CLASS_NAMES[i], *row] for i, row in enumerate(matrix.tolist())],
    )
    write_csv(
        per_class_csv,
        ["class", "accuracy", "test_images"],
        [
            [n, float(a), int(c)]
            for n, a, c in zip(CLASS_NAMES, per_class, matrix.sum(axis=1), strict=True)
        ],
    )
    write_json(metrics_path, metrics)
    log.info(
        "%s: test accuracy %.2f%% on %d images (%.1f s)",
        checkpoint["experiment"],
        100 * accuracy,
        len(labels),
        seconds,
    )
    return metrics


def _mean_rate(history: list[dict]) -> float | None:
    """Training images per second over the whole run (images / time, not a mean of rates)."""
    if not history:
        return None
    seconds = sum(row["epoch_seconds"] for row in history)
    images = sum(row["images_per_s"] * row["epoch_seconds"] for row in history)
    return images / seconds if seconds else None
