"""Differences between experiments, stated with their 95% interval and a t-test (scipy.stats), and
in words: does the difference stand out from the spread between seeds?

Two experiments run on the same seeds are compared seed by seed (a paired t-test: the seed fixes
the initialisation and the order of the batches, so pairing removes that part of the noise);
otherwise Welch's t-test. With one run on either side there is no spread to compare with: the
difference is given, and no test.

Each pair is compared on its test accuracy, on its accuracy under corruption (the mean over
every corruption and severity) and on its calibration error (ECE): does the chapter's
augmentation, dropout or a frontier recipe change how the model holds up, or how honest it is?
"""

from __future__ import annotations

import logging
from pathlib import Path

from fashion_cnn.core.files import write_csv, write_text
from fashion_cnn.results.reading import read_metrics
from fashion_cnn.results.stats import percent
from fashion_cnn.results.tables import html_page, markdown_table

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.05
# what a pair is compared on: the measure, and how a table names it
MEASURES = {
    "test_accuracy": "test accuracy",
    "corrupted_accuracy": "accuracy under corruption",
    "ece": "calibration error (ECE)",
}
COLUMNS = [
    "a",
    "b",
    "measure",
    "test",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "difference",
    "ci95_low",
    "ci95_high",
    "t",
    "df",
    "p_value",
    "verdict",
]


def over_seeds(metrics: dict, measure: str) -> dict:
    """A measure's summary over seeds in an experiment's aggregate metrics."""
    if measure == "test_accuracy":
        summary: dict = metrics["test_accuracy_over_seeds"]
        return summary
    return dict(metrics["trust_over_seeds"][measure])


def compare(a: dict, b: dict, measure: str = "test_accuracy") -> dict:
    """Compare two experiments' aggregate metrics (the measure over seeds, and ``seeds``)."""
    from scipy import stats  # half a second, only when two experiments are compared

    summary_a, summary_b = over_seeds(a, measure), over_seeds(b, measure)
    values_a = dict(zip(a["seeds"], summary_a["values"], strict=True))
    values_b = dict(zip(b["seeds"], summary_b["values"], strict=True))
    row = {
        "a": a["experiment"],
        "b": b["experiment"],
        "measure": measure,
        "n_a": len(values_a),
        "n_b": len(values_b),
        "mean_a": summary_a["mean"],
        "mean_b": summary_b["mean"],
        "ci95_low": None,
        "ci95_high": None,
        "t": None,
        "df": None,
        "p_value": None,
    }
    row["difference"] = row["mean_a"] - row["mean_b"]
    if len(values_a) < 2 or len(values_b) < 2:
        row["test"] = "none (n = 1 on a side)"
        row["verdict"] = (
            "no test: with one run on a side there is no seed spread to compare the difference "
            "with; run more seeds (seeds: [...])"
        )
        return row
    if set(values_a) == set(values_b):
        seeds = sorted(values_a)
        result = stats.ttest_rel([values_a[s] for s in seeds], [values_b[s] for s in seeds])
        row["test"] = f"paired t-test over seeds {', '.join(map(str, seeds))}"
    else:
        result = stats.ttest_ind(list(values_a.values()), list(values_b.values()), equal_var=False)
        row["test"] = "Welch's t-test (different seeds)"
    interval = result.confidence_interval(confidence_level=0.95)
    row.update(
        ci95_low=float(interval.low),
        ci95_high=float(interval.high),
        t=float(result.statistic),
        df=float(result.df),
        p_value=float(result.pvalue),
    )
    points = f"{100 * row['difference']:+.2f} points"
    if row["p_value"] < SIGNIFICANCE:
        row["verdict"] = (
            f"{points}: stands out from seed noise (p = {row['p_value']:.3g} < {SIGNIFICANCE})"
        )
    else:
        row["verdict"] = (
            f"{points}: does not stand out from seed noise (p = {row['p_value']:.3g}); the "
            "interval includes zero; more seeds would tell"
        )
    return row


def _display(row: dict) -> list[str]:
    interval = (
        "—"
        if row["ci95_low"] is None
        else f"[{100 * row['ci95_low']:+.2f}, {100 * row['ci95_high']:+.2f}] points"
    )
    return [
        f"{row['a']} − {row['b']}",
        MEASURES[row["measure"]],
        f"{percent(row['mean_a'])} (n={row['n_a']}) vs {percent(row['mean_b'])} (n={row['n_b']})",
        f"{100 * row['difference']:+.2f} points",
        interval,
        row["test"],
        row["verdict"],
    ]


HEADER = ["difference", "measure", "a vs b", "a − b", "95% interval", "test", "in words"]


def write_comparisons(
    pairs: list[tuple[str, str]], metrics_paths: dict[str, Path], outputs: dict[str, Path]
) -> list[dict]:
    """Compare every pair (a, b) from the experiments' aggregate metrics.json files; write the
    table as CSV, Markdown and HTML (``outputs`` keys: csv, markdown, html)."""
    metrics = {name: read_metrics(path, over_seeds=True) for name, path in metrics_paths.items()}
    rows = [compare(metrics[a], metrics[b], measure) for a, b in pairs for measure in MEASURES]
    write_csv(outputs["csv"], COLUMNS, [[row[column] for column in COLUMNS] for row in rows])
    shown = [_display(row) for row in rows]
    write_text(outputs["markdown"], markdown_table(HEADER, shown))
    write_text(
        outputs["html"],
        html_page(
            "fashion-cnn comparisons",
            "fashion-cnn: differences in test accuracy, accuracy under corruption and "
            "calibration error, with their 95% interval",
            HEADER,
            shown,
        ),
    )
    for row in rows:
        log.info("%s − %s, %s: %s", row["a"], row["b"], row["measure"], row["verdict"])
    return rows
