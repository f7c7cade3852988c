"""One experiment over its seeds: the per-seed results summarised in results/<experiment>/.

The representative seed (whose confusion matrix, filters and ONNX export stand for the
experiment) is the first listed in ``seeds``: chosen before any result is known, so the figures
are not the best run picked after the fact; for a one-seed experiment it is that seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_csv, write_json, write_text
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


def aggregate_metrics(per_seed: list[dict]) -> dict:
    """The experiment's metrics over its seeds; the first entry is the representative seed's."""
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
    representative_confusion_csv: Path,
    representative_summary: Path,
    outputs: dict[str, Path],
) -> dict:
    """Write the experiment's metrics.json, per_seed.csv, training curves, the representative
    seed's confusion matrix and model summary (``outputs`` keys: metrics, per_seed, curves,
    confusion_png, model_summary)."""
    per_seed = [read_metrics(path) for path in metrics_paths]
    aggregate = aggregate_metrics(per_seed)
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
