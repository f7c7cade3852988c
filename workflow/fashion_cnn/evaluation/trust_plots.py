"""The figures beyond accuracy: the reliability diagram, the gallery of the most confident
mistakes, and accuracy under corruption (one experiment's, and every experiment's side by side)."""

from __future__ import annotations

import numpy as np

from fashion_cnn import CLASS_NAMES
from fashion_cnn.evaluation import calibration
from fashion_cnn.evaluation.corruptions import CLEAN, CORRUPTIONS, SEVERITIES
from fashion_cnn.evaluation.plots import plt, save_and_close


def plot_reliability(
    log_probs: np.ndarray, labels: np.ndarray, *, bins: int, temperature: float, output, title: str
) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, with the
    share of images per bin below; the diagonal is a calibrated model."""
    figure, axes = plt.subplots(
        2, 2, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for column, (t, name) in enumerate(
        [(1.0, "as trained"), (temperature, f"T = {temperature:.2f}")]
    ):
        probs = calibration.probabilities(log_probs, t)
        table = calibration.reliability_bins(probs, labels, bins)
        ece = calibration.expected_calibration_error(probs, labels, bins)
        centres = (table["edges"][:-1] + table["edges"][1:]) / 2
        width = 1 / bins
        top, bottom = axes[0, column], axes[1, column]
        top.bar(
            centres,
            np.nan_to_num(table["accuracy"]),
            width=width,
            edgecolor="black",
            color="tab:blue",
            label="accuracy",
        )
        gap = np.nan_to_num(table["confidence"] - table["accuracy"])
        top.bar(
            centres,
            gap,
            bottom=np.nan_to_num(table["accuracy"]),
            width=width,
            color="tab:red",
            alpha=0.35,
            label="confidence − accuracy",
        )
        top.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        top.set(
            ylabel="accuracy",
            title=f"{name}: ECE {100 * ece:.2f}% ({bins} bins)",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(centres, table["counts"] / len(labels), width=width, color="grey")
        bottom.set(xlabel="confidence (top class's probability)", ylabel="share of images")
    figure.suptitle(title)
    save_and_close(figure, output)


def confused_pairs(matrix: np.ndarray) -> list[dict]:
    """Every (true, predicted) pair with mistakes, most mistakes first; the rate is the share
    of the true class's test images predicted as the other class."""
    totals = matrix.sum(axis=1)
    pairs = [
        {
            "true": CLASS_NAMES[i],
            "predicted": CLASS_NAMES[j],
            "true_index": i,
            "predicted_index": j,
            "images": int(matrix[i, j]),
            "rate": float(matrix[i, j] / totals[i]) if totals[i] else 0.0,
        }
        for i in range(len(matrix))
        for j in range(len(matrix))
        if i != j and matrix[i, j] > 0
    ]
    return sorted(pairs, key=lambda pair: (-pair["images"], pair["true_index"]))


def confident_mistakes(
    log_probs: np.ndarray, labels: np.ndarray, pair: dict, count: int
) -> list[tuple[int, float]]:
    """(test image index, probability of the wrong class) of the pair's ``count`` most
    confident mistakes, most confident first."""
    predictions = log_probs.argmax(axis=1)
    chosen = np.flatnonzero(
        (labels == pair["true_index"]) & (predictions == pair["predicted_index"])
    )
    probability = np.exp(log_probs[chosen, pair["predicted_index"]])
    order = np.argsort(-probability, kind="stable")[:count]
    return [(int(chosen[i]), float(probability[i])) for i in order]


def plot_failures(images: np.ndarray, gallery: list[tuple[dict, list]], output, title: str) -> None:
    """One row per confused pair: its rate, then its most confident mistakes."""
    columns = max([len(mistakes) for _, mistakes in gallery] + [1])
    rows = max(len(gallery), 1)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.6 * columns + 1, 2.0 * rows), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for row, (pair, mistakes) in enumerate(gallery):
        axes[row, 0].text(
            -0.15,
            0.5,
            f"{pair['true']} → {pair['predicted']}\n{pair['images']} images "
            f"({100 * pair['rate']:.1f}%)",
            transform=axes[row, 0].transAxes,
            ha="right",
            va="center",
            fontsize=9,
        )
        for column, (index, probability) in enumerate(mistakes):
            axes[row, column].imshow(images[index], cmap="gray", vmin=0, vmax=255)
            axes[row, column].set_title(f"#{index}, p={probability:.2f}", fontsize=8)
    if not gallery:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.suptitle(title)
    figure.subplots_adjust(left=0.22)
    save_and_close(figure, output)


def plot_robustness(robustness: dict, output, title: str) -> None:
    """Accuracy against severity, one line per corruption (mean over seeds, ± 1 std when there
    are several); severity 0 is the clean images."""
    figure, axis = plt.subplots(figsize=(10, 5))
    clean = robustness[CLEAN]["0"]
    for name in CORRUPTIONS:
        if name not in robustness:
            continue
        cells = [clean] + [robustness[name][str(s)] for s in SEVERITIES]
        means = [100 * c["mean"] for c in cells]
        spreads = [100 * (c["std"] or 0) for c in cells]
        axis.errorbar([0, *SEVERITIES], means, yerr=spreads, marker="o", capsize=3, label=name)
    axis.set_xticks([0, *SEVERITIES], ["clean", *map(str, SEVERITIES)])
    axis.set(
        xlabel="severity",
        ylabel="test accuracy (%)",
        title=f"{title} (n={clean['n']} seed{'s' if clean['n'] > 1 else ''})",
    )
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_and_close(figure, output)


def plot_robustness_across(rows: list[dict], output) -> None:
    """Every experiment's accuracy per corruption (mean over severities and seeds) beside its
    clean accuracy on the same images (``rows``: each with ``experiment`` and
    ``robustness_over_seeds``, as the summary's rows and the aggregate metrics have them)."""
    names = [CLEAN, *CORRUPTIONS]
    figure, axis = plt.subplots(figsize=(max(8, 1.3 * len(names)) + 3, 5))
    width = 0.8 / max(len(rows), 1)
    for index, row in enumerate(rows):
        robustness = row["robustness_over_seeds"]
        values = [
            100 * np.mean([cell["mean"] for cell in robustness[name].values()])
            if name in robustness
            else np.nan
            for name in names
        ]
        axis.bar(
            np.arange(len(names)) + index * width,
            values,
            width=width,
            label=f"{row['experiment']} (n={robustness[CLEAN]['0']['n']})",
        )
    axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2, ["clean", *names[1:]], rotation=20)
    axis.set(
        ylabel="test accuracy (%), mean over severities and seeds",
        title="accuracy under corruption, every experiment",
    )
    axis.grid(alpha=0.3, axis="y")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_and_close(figure, output)
