"""Per-class precision, recall and F1, their macro and weighted averages, and top-2 accuracy:
scikit-learn's metrics on the test set's labels and the model's scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, top_k_accuracy_score

from fashion_cnn import CLASS_NAMES, NUM_CLASSES

LABELS = list(range(NUM_CLASSES))
MEASURES = ("precision", "recall", "f1")


def classification_report(labels: np.ndarray, probs: np.ndarray) -> dict:
    """{"per_class": {name: {precision, recall, f1, support}}, "macro": {...}, "weighted": {...},
    "top2_accuracy": x}. A class never predicted has precision 0 (scikit-learn's zero_division)."""
    predictions = probs.argmax(axis=1)
    per_class = precision_recall_fscore_support(labels, predictions, labels=LABELS, zero_division=0)
    report: dict = {
        "per_class": {
            name: {
                **{m: float(v[i]) for m, v in zip(MEASURES, per_class[:3], strict=True)},
                "support": int(per_class[3][i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        }
    }
    for average in ("macro", "weighted"):
        values = precision_recall_fscore_support(
            labels, predictions, labels=LABELS, average=average, zero_division=0
        )
        report[average] = {m: float(v) for m, v in zip(MEASURES, values[:3], strict=True)}
    report["top2_accuracy"] = float(top_k_accuracy_score(labels, probs, k=2, labels=LABELS))
    return report
