"""Sweeps: grids over experiment keys, every point trained on every seed.

A sweep names a base experiment and a grid, e.g. ``{epochs: [100, 1000], augmentation: [none,
chapter]}``. Every combination of values is a point: the base experiment with those keys set. A
point is a run like any experiment, named ``sweeps/<sweep>/<key>=<value>/<key>=<value>/...``: its
folder under ``results/``, its jobs (one per seed), its aggregate over seeds. One folder level per
key, in the grid's order, so the name is stable while the grid is not reordered, and readable
without opening a file. No comma: Snakemake's ``--target-jobs`` (how the SLURM plugin starts each
job) splits its wildcards on commas, so the comma-joined names of Hydra's ``override_dirname``
that earlier versions used could not run on a cluster; ``old_point_folders`` finds such folders
and the workflow says how to move them.

Expansion is torch-free (Snakemake imports it); the sweep's table and plot over finished points
are ``fashion_cnn.results.sweeps``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from fashion_cnn.core.errors import UserError

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


def format_value(value: object) -> str:
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
    """``key=value/key=value``: one folder level per key (no comma, see the module's doc)."""
    return "/".join(f"{key}={format_value(value)}" for key, value in values.items())


def old_point_folder(values: dict) -> str:
    """The comma-joined name earlier versions gave the point (``key=value,key=value``)."""
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
    """The base experiment's settings with the point's values, and the sweep's seeds (else the
    experiment's: ``validate_config`` filled them in, the one place seeds are defaulted)."""
    sweep = config["sweeps"][point.sweep]
    settings: dict = copy.deepcopy(config["experiments"][sweep["experiment"]])
    settings.update(copy.deepcopy(point.values))
    if sweep.get("seeds") is not None:
        settings["seeds"] = list(sweep["seeds"])
    return settings


@dataclass(frozen=True)
class RunSpec:
    """One thing the workflow trains over seeds: an experiment, or a sweep's point."""

    name: str  # folder under results/ and the name in its metrics
    experiment: str  # the config entry it starts from
    settings: dict  # that entry's settings, with a sweep point's values and seeds

    @property
    def seeds(self) -> list[int]:
        """The replicates it trains, in the config's order."""
        return [int(seed) for seed in self.settings["seeds"]]


def all_runs(config: dict) -> dict[str, RunSpec]:
    """Every experiment and every point of every sweep, by name (a validated config)."""
    runs = {name: RunSpec(name, name, settings) for name, settings in config["experiments"].items()}
    for sweep_name, sweep in config["sweeps"].items():
        for point in sweep_points(sweep_name, sweep):
            runs[point.run] = RunSpec(point.run, sweep["experiment"], point_settings(config, point))
    return runs


def old_point_folders(config: dict, results: Path) -> list[tuple[Path, Path]]:
    """(old, new) for every folder of a configured sweep's point still under its comma-joined
    name in ``results``: the point's own, and its logs' and run times' (``logs/<rule>/...``,
    ``benchmarks/<rule>/...``), for points over two or more keys trained by an earlier version."""
    bases = [
        results,
        *sorted((results / "logs").glob("*")),
        *sorted((results / "benchmarks").glob("*")),
    ]
    moves = []
    for sweep_name, sweep in config["sweeps"].items():
        if len(sweep["grid"]) < 2:
            continue  # one key: the name never had a comma, and did not change
        for base in bases:
            folder = base / SWEEPS_FOLDER / sweep_name
            for point in sweep_points(sweep_name, sweep):
                old = folder / old_point_folder(point.values)
                if old.is_dir():
                    moves.append((old, folder / point.folder))
    return moves


def check_old_point_folders(config: dict, results: Path) -> None:
    """Stop before any job while a point's trained replicates sit under its old name: the
    workflow would train the point again, beside them, from the start."""
    moves = old_point_folders(config, results)
    if not moves:
        return
    points = {old.name for old, _ in moves}
    raise UserError(
        f"{len(points)} sweep point(s) under {results} ({len(moves)} folders: results, logs, run "
        f"times) are in folders named the way earlier versions named them ({moves[0][0].name}): "
        f"a point's folder is now one level per key "
        f"({moves[0][1].relative_to(moves[0][0].parent)}), because Snakemake's cluster jobs "
        "cannot carry a comma in a wildcard. Move them, with their logs and run times, by the "
        "commands below (the models, histories and metrics stay valid where they land; only the "
        "name recorded in them as a label keeps the comma), then run Snakemake again. Nothing "
        "was run.",
        commands=tuple(
            f"mkdir -p {shlex.quote(str(new.parent))} && mv {shlex.quote(str(old))} "
            f"{shlex.quote(str(new))}"
            for old, new in moves
        ),
    )


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
