"""How sure a model is, and whether it should be: expected calibration error, negative
log-likelihood and Brier score, and temperature scaling (Guo et al. 2017, "On Calibration of
Modern Neural Networks", arXiv:1706.04599).

Every function takes log-probabilities (N, 10): a model's log-softmax, or the log of the mean
softmax over test-time views. NLL and Brier are scikit-learn's; the bins are ours because the
reliability diagram draws them (tests/test_assessment.py holds the ECE equal to torchmetrics').
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special
from sklearn.metrics import brier_score_loss, log_loss

from fashion_cnn import NUM_CLASSES

LABELS = list(range(NUM_CLASSES))


def probabilities(log_probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(log_probs / temperature), in float64."""
    return special.softmax(np.asarray(log_probs, dtype=np.float64) / temperature, axis=1)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (the top class's probability): images, mean confidence,
    accuracy (nan where a bin is empty). A bin holds confidences in [low, high); 1.0 is in the
    last (torchmetrics' convention)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return {"edges": edges, "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Sum over bins of (share of images) x |accuracy - mean confidence|."""
    table = reliability_bins(probs, labels, bins)
    filled = table["counts"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float((table["counts"][filled] * gaps).sum() / len(labels))


def scores(log_probs: np.ndarray, labels: np.ndarray, bins: int, temperature: float = 1.0) -> dict:
    """ECE, NLL (nats per image) and Brier score (sum over classes, mean over images)."""
    probs = probabilities(log_probs, temperature)
    return {
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": float(log_loss(labels, probs, labels=LABELS)),
        "brier": float(brier_score_loss(labels, probs, labels=LABELS)),
    }


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T (0.05 to 20) that minimises the NLL of softmax(log_probs / T)."""
    logits = np.asarray(log_probs, dtype=np.float64)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[rows, labels]))

    result = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
