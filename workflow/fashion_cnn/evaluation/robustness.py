"""Accuracy on corrupted test images (``corruptions``): every registered corruption at each
severity, scored with the experiment's own test-time views, beside the same images clean."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.files import write_csv
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.evaluation.corruptions import (
    CLEAN,
    COLUMNS,
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    mean_corrupted_accuracy,
)
from fashion_cnn.evaluation.evaluate import load_trained, scorer
from fashion_cnn.training.device import resolve_device, set_threads

log = logging.getLogger(__name__)


def assess_robustness(
    checkpoint_path: Path,
    data_path: Path,
    output: Path,
    *,
    images: int = 10000,
    device_spec: str = "auto",
    batch_size: int = 1000,
    threads: int = 1,
) -> list[dict]:
    """Write one row per corruption and severity (and the clean images as severity 0): the
    accuracy on the first ``images`` test images. Returns the rows."""
    set_threads(threads)
    device = resolve_device(device_spec)
    checkpoint, model = load_trained(checkpoint_path)
    experiment = ExperimentSettings.from_dict(checkpoint["config"])
    log_probs = scorer(
        model,
        device,
        batch_size,
        experiment.evaluation,
        softmax_head=experiment.model.output_softmax,
    )
    arrays = load_prepared(data_path)
    clean, labels = arrays["test_images"][:images], arrays["test_labels"][:images]

    def accuracy(batch: np.ndarray) -> float:
        return float((log_probs(batch).argmax(axis=1) == labels).mean())

    started = time.perf_counter()
    rows = [_row(CLEAN, 0, accuracy(clean), len(labels))]
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            rows.append(_row(name, severity, accuracy(corrupt(clean, name, severity)), len(labels)))
    write_csv(output, COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    log.info(
        "%s: accuracy %.2f%% clean, %.2f%% mean over %d corrupted sets of %d images (%.1f s)",
        checkpoint["experiment"],
        100 * rows[0]["accuracy"],
        100 * mean_corrupted_accuracy(rows),
        len(rows) - 1,
        len(labels),
        time.perf_counter() - started,
    )
    return rows


def _row(corruption: str, severity: int, accuracy: float, images: int) -> dict:
    parameter, unit = None, ""
    if corruption != CLEAN:
        entry = CORRUPTIONS.get(corruption)
        parameter, unit = entry.parameters[severity - 1], entry.unit
    values = [corruption, severity, parameter, unit, accuracy, images]
    return dict(zip(COLUMNS, values, strict=True))
