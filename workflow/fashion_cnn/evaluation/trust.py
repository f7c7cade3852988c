"""Beyond accuracy, on the scores the evaluation already has: the classification report, and how
honest the probabilities are before and after temperature scaling.

The temperature is fitted on images the run never trained on, chosen in this order:
1. the experiment's validation images (the last ``validation_images`` training images);
2. training images the run never read (after its ``train_subset`` and unlabelled images): the
   last ``temperature_images`` of them;
3. with none left (a run on all 60,000 images), the first half of the test set; the figures after
   scaling are then on the other half, and both halves are named in metrics.json.
The exported ONNX model does not include the temperature: it outputs the raw scores, as trained,
and metrics.json carries the temperature for whoever wants calibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fashion_cnn import TRAINING_IMAGES
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.evaluation import calibration
from fashion_cnn.evaluation.classification import classification_report


@dataclass(frozen=True)
class HeldOut:
    """Where the temperature is fitted, and where it is scored."""

    fit: slice  # into the training images, or into the test images when ``from_test``
    score: slice  # into the test images
    from_test: bool
    fitted_on: str
    scored_on: str


def held_out(
    experiment: ExperimentSettings, limit: int, training_images: int = TRAINING_IMAGES
) -> HeldOut:
    """The images the temperature is fitted on (see the module docstring), at most ``limit``."""
    test_all = slice(None)
    validation = experiment.data.validation_images
    if validation:
        count = min(validation, limit)
        return HeldOut(
            slice(training_images - count, training_images),
            test_all,
            False,
            f"the experiment's validation images ({count:,}, training images "
            f"{training_images - count:,}-{training_images - 1:,})",
            "the test set",
        )
    used = (experiment.data.train_subset or training_images) + experiment.unlabelled_count(
        training_images
    )
    if used < training_images:
        count = min(training_images - used, limit)
        return HeldOut(
            slice(training_images - count, training_images),
            test_all,
            False,
            f"{count:,} training images the run never read (images "
            f"{training_images - count:,}-{training_images - 1:,})",
            "the test set",
        )
    return HeldOut(
        slice(0, 5000),
        slice(5000, None),
        True,
        "the first half of the test set (images 0-4,999): the run read every training image",
        "the second half of the test set (images 5,000-9,999)",
    )


def log_probabilities(scores: np.ndarray, averaged: bool) -> np.ndarray:
    """Log-probabilities from the evaluation's scores: raw outputs (log-softmax) or, with
    test-time views or a Softmax head (``averaged``), probabilities (their log)."""
    scores = np.asarray(scores, dtype=np.float64)
    if averaged:
        return np.log(np.clip(scores, 1e-12, None))
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def trust_record(
    test: tuple[np.ndarray, np.ndarray],
    held: HeldOut,
    held_out_scores: Callable[[], tuple[np.ndarray, np.ndarray]],
    bins: int,
) -> dict:
    """The classification report and the calibration figures; ``test``: (log-probabilities,
    labels) of the test set; ``held_out_scores``: the same for the training images the
    temperature is fitted on (called only when those are training images)."""
    log_probs, labels = test
    if held.from_test:
        fit_scores, fit_labels = log_probs[held.fit], labels[held.fit]
    else:
        fit_scores, fit_labels = held_out_scores()
    temperature = calibration.fit_temperature(fit_scores, fit_labels)
    scored, scored_labels = log_probs[held.score], labels[held.score]
    return {
        "classification": classification_report(labels, calibration.probabilities(log_probs)),
        "calibration": {
            "bins": bins,
            **calibration.scores(log_probs, labels, bins),
            "temperature": {
                "value": temperature,
                "fitted_on": held.fitted_on,
                "fitted_images": len(fit_labels),
                "scored_on": held.scored_on,
                "before": calibration.scores(scored, scored_labels, bins),
                "after": calibration.scores(scored, scored_labels, bins, temperature),
            },
        },
    }
