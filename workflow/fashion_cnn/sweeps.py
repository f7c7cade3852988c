"""Sweeps: grids over experiment keys, every point trained on every seed.

A sweep names a base experiment and a grid, e.g. ``{epochs: [100, 1000], augmentation: [none,
chapter]}``. Every combination of values is a point: the base experiment with those keys set. A
point is a run like any experiment, named ``sweeps/<sweep>/<key>=<value>,...`` (Hydra's
``override_dirname`` convention): its folder under ``results/``, its jobs (one per seed), its
aggregate over seeds. The folder name lists the keys in the grid's order, so it is stable while the
grid is not reordered, and readable without opening a file.

Expansion is torch-free (Snakemake imports it); the sweep's table and plot import their libraries
when they run.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SWEEPS_FOLDER = "sweeps"
# Keys a grid cannot set: seeds are the sweep's own `seeds`, and the rest only label a recipe.
NOT_SWEPT = {
    "seed": "give the seeds in the sweep's own `seeds: [...]`",
    "seeds": "give the seeds in the sweep's own `seeds: [...]`",
    "description": "it only labels the recipe",
    "chapter_accuracy": "it only labels the recipe",
}
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def format_value(value) -> str:
    """A grid value as it appears in a folder name: 1.0e-3 -> 0.001, true, chapter."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return UNSAFE.sub("-", value) or "-"
    return UNSAFE.sub("-", json.dumps(value, sort_keys=True))


def point_folder(values: dict) -> str:
    return ",".join(f"{key}={format_value(value)}" for key, value in values.items())


@dataclass(frozen=True)
class SweepPoint:
    sweep: str
    values: dict

    @property
    def folder(self) -> str:
        return point_folder(self.values)

    @property
    def run(self) -> str:
        """The run's name, which is also its folder under results/."""
        return f"{SWEEPS_FOLDER}/{self.sweep}/{self.folder}"


def sweep_points(name: str, sweep: dict) -> list[SweepPoint]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(sweep["grid"])
    return [
        SweepPoint(name, dict(zip(keys, combination, strict=True)))
        for combination in itertools.product(*(sweep["grid"][key] for key in keys))
    ]


def point_settings(config: dict, point: SweepPoint) -> dict:
    """The base experiment's settings with the point's values, and the sweep's seeds."""
    sweep = config["sweeps"][point.sweep]
    settings = copy.deepcopy(config["experiments"][sweep["experiment"]])
    settings.update(copy.deepcopy(point.values))
    if sweep.get("seeds") is not None:
        settings["seeds"] = list(sweep["seeds"])
    elif settings.get("seeds") is None:
        settings["seeds"] = [settings["seed"]]
    return settings


@dataclass(frozen=True)
class RunSpec:
    """One thing the workflow trains over seeds: an experiment, or a sweep's point."""

    name: str  # folder under results/ and the name in its metrics
    experiment: str  # the config entry it starts from
    settings: dict  # that entry's settings, with a sweep point's values and seeds


def all_runs(config: dict) -> dict[str, RunSpec]:
    """Every experiment and every point of every sweep, by name (a validated config)."""
    runs = {name: RunSpec(name, name, settings) for name, settings in config["experiments"].items()}
    for sweep_name, sweep in config["sweeps"].items():
        for point in sweep_points(sweep_name, sweep):
            runs[point.run] = RunSpec(point.run, sweep["experiment"], point_settings(config, point))
    return runs


def sweep_definition(config: dict, name: str) -> dict:
    """What the sweep's table needs, as JSON for a rule's params."""
    sweep = config["sweeps"][name]
    return {
        "name": name,
        "experiment": sweep["experiment"],
        "description": sweep.get("description", ""),
        "keys": list(sweep["grid"]),
        "points": [
            {"run": point.run, "folder": point.folder, "values": point.values}
            for point in sweep_points(name, sweep)
        ],
    }


# ----------------------------------------------------------------------------- the sweep's table

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
    from fashion_cnn.comparisons import compare

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
    from fashion_cnn.errors import UserError
    from fashion_cnn.files import read_json, write_csv, write_text
    from fashion_cnn.plots import plot_sweep
    from fashion_cnn.stats import percent, percent_with_spread
    from fashion_cnn.tables import html_page, markdown_table

    points = definition["points"]
    if len(metrics_paths) != len(points):
        raise UserError(
            f"summarize-sweep: {len(points)} points but {len(metrics_paths)} --metrics files; "
            "pass one aggregate metrics.json per point, in the sweep's order."
        )
    metrics = [read_json(path) for path in metrics_paths]
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
    best_index = max(
        range(len(points)), key=lambda i: (metrics[i]["test_accuracy_over_seeds"]["mean"], -i)
    )
    best = metrics[best_index]
    rows, shown = [], []
    for index, (point, data) in enumerate(zip(points, metrics, strict=True)):
        summary = data["test_accuracy_over_seeds"]
        versus = _versus_best(data, best)
        is_best = index == best_index
        verdict = _verdict(versus, is_best)
        interval = summary["ci95"] or [None, None]
        rows.append(
            [
                point["folder"],
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
        )
        low, high = interval
        shown.append(
            [
                *(format_value(point["values"][key]) for key in definition["keys"]),
                ("**" if is_best else "")
                + percent_with_spread(summary)
                + ("**" if is_best else ""),
                "—" if low is None else f"{percent(low)} to {percent(high)}",
                verdict,
            ]
        )
    header = [*definition["keys"], "test accuracy, mean ± std (n)", "95% interval", "vs the best"]
    write_csv(outputs["csv"], COLUMNS, rows)
    title = f"sweep {definition['name']}: {definition['experiment']} over " + ", ".join(
        definition["keys"]
    )
    note = (
        f"{definition['description']}\n\n" if definition["description"] else ""
    ) + "Best point in bold; each other point is compared with it seed by seed (paired t-test).\n\n"
    write_text(outputs["markdown"], f"# {title}\n\n{note}" + markdown_table(header, shown))
    html_rows = [[cell.replace("**", "") for cell in cells] for cells in shown]
    write_text(outputs["html"], html_page(f"fashion-cnn {title}", title, header, html_rows))
    plot_sweep(definition, metrics, best_index, Path(outputs["plot"]))
    log.info(
        "sweep %s: best point %s, %s",
        definition["name"],
        points[best_index]["folder"],
        percent_with_spread(best["test_accuracy_over_seeds"]),
    )
    return points[best_index]
