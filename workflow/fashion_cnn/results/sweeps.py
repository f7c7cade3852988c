"""A sweep's table and plot over its finished points: each point's mean over seeds, its 95%
interval, the best point, and every other point tested against the best (paired by seed)."""

from __future__ import annotations

import logging
from pathlib import Path

from fashion_cnn.config.sweeps import format_value
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_csv, write_text
from fashion_cnn.evaluation.plots import plot_sweep
from fashion_cnn.results.comparisons import compare
from fashion_cnn.results.reading import read_metrics
from fashion_cnn.results.stats import percent, percent_with_spread
from fashion_cnn.results.tables import html_page, markdown_table

log = logging.getLogger(__name__)

COLUMNS = [
    "point",
    "n",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "min",
    "max",
    "best",
    "difference_to_best",
    "difference_ci95_low",
    "difference_ci95_high",
    "p_value",
    "verdict",
]


def _versus_best(point: dict, best: dict) -> dict:
    if point is best:
        return {"difference": 0.0, "ci95_low": None, "ci95_high": None, "p_value": None}
    return compare(point, best)


def _verdict(row: dict, is_best: bool) -> str:
    if is_best:
        return "best (highest mean)"
    if row["p_value"] is None:
        return "no test (n = 1)"
    points = f"{100 * row['difference']:+.2f} points"
    if row["p_value"] < 0.05:
        return f"{points}: below the best beyond seed noise (p = {row['p_value']:.3g})"
    return f"{points}: within seed noise of the best (p = {row['p_value']:.3g})"


def summarize_sweep(definition: dict, metrics_paths: list[Path], outputs: dict[str, Path]) -> dict:
    """The sweep's table (CSV, Markdown, HTML) and its plot (``outputs`` keys: csv, markdown,
    html, plot). ``metrics_paths`` are the points' aggregate metrics.json, in the definition's
    order. Returns the best point."""
    points = definition["points"]
    metrics = _read_points(points, metrics_paths)
    best_index = max(
        range(len(points)), key=lambda i: (metrics[i]["test_accuracy_over_seeds"]["mean"], -i)
    )
    rows, shown = [], []
    for index, (point, data) in enumerate(zip(points, metrics, strict=True)):
        summary = data["test_accuracy_over_seeds"]
        is_best = index == best_index
        versus = _versus_best(data, metrics[best_index])
        verdict = _verdict(versus, is_best)
        rows.append(_csv_row(point["folder"], summary, is_best, versus, verdict))
        values = [format_value(point["values"][key]) for key in definition["keys"]]
        shown.append([*values, *_shown_cells(summary, is_best), verdict])
    write_csv(outputs["csv"], COLUMNS, rows)
    _write_pages(definition, shown, outputs)
    plot_sweep(definition, metrics, best_index, Path(outputs["plot"]))
    log.info(
        "sweep %s: best point %s, %s",
        definition["name"],
        points[best_index]["folder"],
        percent_with_spread(metrics[best_index]["test_accuracy_over_seeds"]),
    )
    return points[best_index]


def _read_points(points: list[dict], metrics_paths: list[Path]) -> list[dict]:
    """Each point's aggregate metrics, checked to be that point's, with its settings."""
    if len(metrics_paths) != len(points):
        raise UserError(
            f"summarize-sweep: {len(points)} points but {len(metrics_paths)} --metrics files; "
            "pass one aggregate metrics.json per point, in the sweep's order."
        )
    metrics = [read_metrics(path, over_seeds=True) for path in metrics_paths]
    for point, data, path in zip(points, metrics, metrics_paths, strict=True):
        stale = {
            key: data["config"].get(key)
            for key, value in point["values"].items()
            if data["config"].get(key) != value
        }
        if data["experiment"] != point["run"] or stale:
            raise UserError(
                f"summarize-sweep: {path} holds {data['experiment']} with {stale or 'other'} "
                f"settings, not the point {point['run']}. Rebuild it (snakemake reruns a point "
                "whose settings changed)."
            )
    return metrics


def _csv_row(folder: str, summary: dict, is_best: bool, versus: dict, verdict: str) -> list:
    interval = summary["ci95"] or [None, None]
    return [
        folder,
        summary["n"],
        summary["mean"],
        summary["std"],
        interval[0],
        interval[1],
        summary["min"],
        summary["max"],
        is_best,
        versus["difference"],
        versus["ci95_low"],
        versus["ci95_high"],
        versus["p_value"],
        verdict,
    ]


def _shown_cells(summary: dict, is_best: bool) -> list[str]:
    """The page's accuracy (bold for the best point) and interval cells."""
    low, high = summary["ci95"] or [None, None]
    bold = "**" if is_best else ""
    return [
        bold + percent_with_spread(summary) + bold,
        "—" if low is None else f"{percent(low)} to {percent(high)}",
    ]


def _write_pages(definition: dict, shown: list[list[str]], outputs: dict[str, Path]) -> None:
    header = [*definition["keys"], "test accuracy, mean ± std (n)", "95% interval", "vs the best"]
    title = f"sweep {definition['name']}: {definition['experiment']} over " + ", ".join(
        definition["keys"]
    )
    note = (
        f"{definition['description']}\n\n" if definition["description"] else ""
    ) + "Best point in bold; each other point is compared with it seed by seed (paired t-test).\n\n"
    write_text(outputs["markdown"], f"# {title}\n\n{note}" + markdown_table(header, shown))
    html_rows = [[cell.replace("**", "") for cell in cells] for cells in shown]
    write_text(outputs["html"], html_page(f"fashion-cnn {title}", title, header, html_rows))
