"""One experiment over its seeds: the per-seed results summarised in results/<experiment>/.

The representative seed (whose confusion matrix, filters and ONNX export stand for the
experiment) is the first listed in ``seeds``: chosen before any result is known, so the figures
are not the best run picked after the fact; for a one-seed experiment it is that seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_csv, write_json, write_text
from fashion_cnn.evaluation.classification import MEASURES
from fashion_cnn.evaluation.corruptions import mean_corrupted_accuracy, read_robustness
from fashion_cnn.evaluation.plots import plot_confusion_matrix, plot_history
from fashion_cnn.results.reading import read_metrics
from fashion_cnn.results.stats import describe, percent_with_spread

log = logging.getLogger(__name__)

REPRESENTATIVE_REASON = (
    "the first seed listed in the experiment's seeds: fixed before any result is known, so the "
    "figures are not the best run picked after the fact"
)
PER_SEED_COLUMNS = [
    "seed",
    "test_accuracy",
    "final_train_loss",
    "final_train_accuracy",
    "training_seconds",
]


# Beyond accuracy, per seed (evaluation.trust), summarised over the seeds like the accuracy.
def _average(average: str, measure: str) -> Callable[[dict], float]:
    return lambda metrics: metrics["classification"][average][measure]


TRUST_MEASURES: dict[str, Callable[[dict], float]] = {
    **{
        f"{average}_{measure}": _average(average, measure)
        for average in ("macro", "weighted")
        for measure in MEASURES
    },
    "top2_accuracy": lambda m: m["classification"]["top2_accuracy"],
    "ece": lambda m: m["calibration"]["ece"],
    "nll": lambda m: m["calibration"]["nll"],
    "brier": lambda m: m["calibration"]["brier"],
    "temperature": lambda m: m["calibration"]["temperature"]["value"],
    # before and after temperature scaling on the same images (the test set, or its second
    # half when the first was held out to fit the temperature)
    "ece_before_temperature": lambda m: m["calibration"]["temperature"]["before"]["ece"],
    "ece_after_temperature": lambda m: m["calibration"]["temperature"]["after"]["ece"],
    "nll_after_temperature": lambda m: m["calibration"]["temperature"]["after"]["nll"],
}


def trust_over_seeds(per_seed: list[dict], robustness: list[list[dict]]) -> dict:
    """The classification report, calibration and robustness summarised over the seeds:
    ``trust_over_seeds`` (one figure each, with ``corrupted_accuracy``: the mean over every
    corruption and severity), ``classification_over_seeds`` (per class) and
    ``robustness_over_seeds`` (per corruption and severity; severity 0 is the clean images)."""
    trust = {name: describe([get(m) for m in per_seed]) for name, get in TRUST_MEASURES.items()}
    trust["corrupted_accuracy"] = describe([mean_corrupted_accuracy(rows) for rows in robustness])
    classes = {
        name: {
            measure: describe([m["classification"]["per_class"][name][measure] for m in per_seed])
            for measure in MEASURES
        }
        for name in CLASS_NAMES
    }
    cells: dict[str, dict[str, list[float]]] = {}
    for rows in robustness:
        for row in rows:
            cells.setdefault(row["corruption"], {}).setdefault(str(row["severity"]), [])
            cells[row["corruption"]][str(row["severity"])].append(row["accuracy"])
    return {
        "trust_over_seeds": trust,
        "classification_over_seeds": classes,
        "robustness_over_seeds": {
            corruption: {severity: describe(values) for severity, values in by_severity.items()}
            for corruption, by_severity in cells.items()
        },
    }


def aggregate_metrics(per_seed: list[dict], robustness: list[list[dict]]) -> dict:
    """The experiment's metrics over its seeds; the first entry is the representative seed's
    (``robustness``: each seed's rows from its robustness.csv, in the same order)."""
    names = {metrics["experiment"] for metrics in per_seed}
    seeds = [metrics["seed"] for metrics in per_seed]
    if len(names) != 1 or len(set(seeds)) != len(seeds):
        raise UserError(
            f"aggregate-seeds needs the metrics of one experiment, one file per seed; got "
            f"experiments {sorted(names)} and seeds {seeds}. Pass each seed's metrics.json once."
        )
    representative = per_seed[0]
    accuracy = describe([metrics["test_accuracy"] for metrics in per_seed])
    per_class = {
        name: describe([metrics["per_class_accuracy"][name] for metrics in per_seed])
        for name in CLASS_NAMES
    }
    aggregate = dict(representative)
    aggregate.update(
        {
            "test_accuracy": accuracy["mean"],
            "test_accuracy_over_seeds": accuracy,
            "per_class_accuracy": {name: summary["mean"] for name, summary in per_class.items()},
            "per_class_accuracy_over_seeds": per_class,
            **trust_over_seeds(per_seed, robustness),
            "seeds": seeds,
            "representative_seed": representative["seed"],
            "representative_seed_reason": REPRESENTATIVE_REASON,
        }
    )
    del aggregate["seed"]
    # the representative's settings, with the experiment's seeds (its own say [its seed])
    aggregate["config"] = dict(representative["config"], seeds=seeds)
    return aggregate


def aggregate_seeds(
    metrics_paths: list[Path],
    history_paths: list[Path],
    robustness_paths: list[Path],
    representative_confusion_csv: Path,
    representative_summary: Path,
    *,
    outputs: dict[str, Path],
) -> dict:
    """Write the experiment's metrics.json, per_seed.csv, training curves, the representative
    seed's confusion matrix and model summary (``outputs`` keys: metrics, per_seed, curves,
    confusion_png, model_summary)."""
    per_seed = [read_metrics(path) for path in metrics_paths]
    aggregate = aggregate_metrics(per_seed, [read_robustness(path) for path in robustness_paths])
    name = aggregate["experiment"]
    write_csv(
        outputs["per_seed"],
        PER_SEED_COLUMNS,
        [
            [
                metrics["seed"],
                metrics["test_accuracy"],
                metrics["training"]["final_train_loss"],
                metrics["training"]["final_train_accuracy"],
                metrics["training"]["seconds"],
            ]
            for metrics in per_seed
        ],
    )
    plot_history(history_paths, outputs["curves"], name)
    matrix = np.loadtxt(
        representative_confusion_csv, delimiter=",", skiprows=1, usecols=range(1, 11), dtype=int
    )
    seed = aggregate["representative_seed"]
    accuracy = per_seed[0]["test_accuracy"]
    plot_confusion_matrix(
        matrix,
        outputs["confusion_png"],
        f"{name}, seed {seed} (representative): test accuracy {100 * accuracy:.2f}%",
    )
    write_text(outputs["model_summary"], Path(representative_summary).read_text())
    write_json(outputs["metrics"], aggregate)
    log.info(
        "%s over seeds %s: test accuracy %s",
        name,
        aggregate["seeds"],
        percent_with_spread(aggregate["test_accuracy_over_seeds"]),
    )
    return aggregate
