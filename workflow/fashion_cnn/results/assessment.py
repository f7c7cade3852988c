"""One experiment beyond accuracy, in results/<experiment>/: the classification report and
robustness over its seeds (tables), and its representative seed's reliability diagram, most
confused class pairs and gallery of its most confident mistakes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.files import write_csv
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.evaluation import trust_plots
from fashion_cnn.evaluation.classification import MEASURES
from fashion_cnn.evaluation.corruptions import CLEAN, CORRUPTIONS, SEVERITIES
from fashion_cnn.evaluation.evaluate import confusion_matrix, read_scores
from fashion_cnn.results.reading import read_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssessmentOutputs:
    classification_csv: Path
    robustness_csv: Path
    robustness_png: Path
    reliability_png: Path
    pairs_csv: Path
    failures_png: Path


@dataclass(frozen=True)
class Gallery:
    pairs: int = 4  # most confused pairs shown
    images: int = 6  # most confident mistakes per pair


def assess_experiment(
    metrics_path: Path,
    scores_path: Path,
    data_path: Path,
    outputs: AssessmentOutputs,
    gallery: Gallery = Gallery(),
) -> None:
    """Write the experiment's tables and figures beyond accuracy (see the module docstring)."""
    metrics = read_metrics(metrics_path, over_seeds=True)
    name, seed = metrics["experiment"], metrics["representative_seed"]
    write_classification_table(metrics, outputs.classification_csv)
    write_robustness_table(metrics["robustness_over_seeds"], outputs.robustness_csv)
    trust_plots.plot_robustness(
        metrics["robustness_over_seeds"],
        outputs.robustness_png,
        f"{name}: accuracy under corruption",
    )
    log_probs, labels = read_scores(scores_path)
    representative = metrics["calibration"]
    trust_plots.plot_reliability(
        log_probs,
        labels,
        bins=representative["bins"],
        temperature=representative["temperature"]["value"],
        output=outputs.reliability_png,
        title=f"{name}, seed {seed} (representative): reliability on the test set; T fitted "
        f"on {representative['temperature']['fitted_images']:,} held-out images",
    )
    pairs = trust_plots.confused_pairs(confusion_matrix(labels, log_probs.argmax(axis=1)))
    write_csv(
        outputs.pairs_csv,
        ["true", "predicted", "images", "rate"],
        [[p["true"], p["predicted"], p["images"], p["rate"]] for p in pairs],
    )
    shown = [
        (pair, trust_plots.confident_mistakes(log_probs, labels, pair, gallery.images))
        for pair in pairs[: gallery.pairs]
    ]
    images = load_prepared(data_path)["test_images"]
    trust_plots.plot_failures(
        images,
        shown,
        outputs.failures_png,
        f"{name}, seed {seed}: the most confident mistakes of the most confused pairs",
    )
    log.info("%s: %d confused pairs; tables and figures written", name, len(pairs))


def _cell(summary: dict) -> list:
    return [summary["mean"], summary["std"], summary["n"]]


def write_classification_table(metrics: dict, path: Path) -> None:
    """One row per (class or average, measure): its mean and standard deviation over the seeds,
    their number and the test images it counts. Per class, then the macro and weighted averages,
    then top-2 accuracy."""
    support = {n: c["support"] for n, c in metrics["classification"]["per_class"].items()}
    total = sum(support.values())
    trust = metrics["trust_over_seeds"]
    rows = []
    for name in CLASS_NAMES:
        for measure in MEASURES:
            cell = metrics["classification_over_seeds"][name][measure]
            rows.append([name, measure, *_cell(cell), support[name]])
    for average in ("macro", "weighted"):
        for measure in MEASURES:
            rows.append(
                [f"{average} average", measure, *_cell(trust[f"{average}_{measure}"]), total]
            )
    rows.append(["all classes", "top-2 accuracy", *_cell(trust["top2_accuracy"]), total])
    write_csv(path, ["row", "measure", "mean", "std", "seeds_n", "support"], rows)


def write_robustness_table(robustness: dict, path: Path) -> None:
    rows = [[CLEAN, 0, None, "", *_cell(robustness[CLEAN]["0"])]]
    for name in CORRUPTIONS:
        if name not in robustness:
            continue
        entry = CORRUPTIONS.get(name)
        for severity in SEVERITIES:
            rows.append(
                [
                    name,
                    severity,
                    entry.parameters[severity - 1],
                    entry.unit,
                    *_cell(robustness[name][str(severity)]),
                ]
            )
    write_csv(
        path,
        ["corruption", "severity", "parameter", "unit", "accuracy", "accuracy_std", "seeds_n"],
        rows,
    )
