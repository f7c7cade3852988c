"""Reading back what the workflow wrote: a seed's ``metrics.json``, and an experiment's over its
seeds, checked against a schema of their own and for figures that agree with each other before
any table, summary or comparison trusts them. An edited mean of 1.5 would print "150.00%"; a
text value or a cut file would end in a traceback; two disagreeing figures would go unnoticed.
Torch-free."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import jsonschema

from fashion_cnn.config.schema import Validator
from fashion_cnn.core.errors import UserError

FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
LOSS = {"type": "number", "minimum": 0}
SEED_METRICS = {
    "type": "object",
    "required": [
        "experiment",
        "seed",
        "test_accuracy",
        "test_images",
        "per_class_accuracy",
        "classification",
        "calibration",
    ],
    "properties": {
        "experiment": {"type": "string", "minLength": 1},
        "seed": {"type": "integer", "minimum": 0},
        "test_accuracy": FRACTION,
        "test_images": {"type": "integer", "minimum": 1},
        "per_class_accuracy": {"type": "object", "additionalProperties": FRACTION},
        "classification": {
            "type": "object",
            "required": ["per_class", "macro", "weighted", "top2_accuracy"],
            "properties": {"top2_accuracy": FRACTION},
        },
        "calibration": {
            "type": "object",
            "required": ["ece", "nll", "brier", "temperature"],
            "properties": {"ece": FRACTION, "nll": LOSS, "brier": {**LOSS, "maximum": 2}},
        },
    },
}
SPREAD: dict[str, Any] = {
    "type": "object",
    "required": ["n", "mean", "std", "values"],
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        "mean": FRACTION,
        "std": {"type": ["number", "null"], "minimum": 0},
        "values": {"type": "array", "items": FRACTION, "minItems": 1},
    },
}
OVER_SEEDS = {
    "type": "object",
    "required": [
        "experiment",
        "test_accuracy",
        "seeds",
        "test_accuracy_over_seeds",
        "trust_over_seeds",
    ],
    "properties": {
        "experiment": {"type": "string", "minLength": 1},
        "test_accuracy": FRACTION,
        "seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        "test_accuracy_over_seeds": SPREAD,
        "trust_over_seeds": {
            "type": "object",
            "additionalProperties": {
                **SPREAD,
                "properties": {
                    **SPREAD["properties"],
                    "mean": LOSS,
                    "values": {"type": "array", "items": LOSS, "minItems": 1},
                },
            },
        },
    },
}


def _refuse(path: Path, reason: str) -> UserError:
    return UserError(
        f"{path} is not a metrics file as this workflow writes it: {reason}. It was edited, cut "
        "short or damaged; delete it and run Snakemake again, which writes it anew from the "
        "outputs it is made from."
    )


def read_metrics(path: str | Path, over_seeds: bool = False) -> dict[str, Any]:
    """A seed's metrics.json, or (``over_seeds``) an experiment's aggregate, checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(path, f"it cannot be read as JSON ({error})") from None
    schema = OVER_SEEDS if over_seeds else SEED_METRICS
    wrong = jsonschema.exceptions.best_match(Validator(schema).iter_errors(data))
    if wrong is not None:
        where = ".".join(str(part) for part in wrong.absolute_path) or "the file"
        raise _refuse(path, f"{where}: {wrong.message}")
    if over_seeds:
        _check_spread(path, data)
    checked: dict[str, Any] = data
    return checked


def _check_spread(path: Path, data: dict[str, Any]) -> None:
    """The aggregate's figures must agree: n, the seeds and the values; the mean and the values;
    the headline accuracy and the mean."""
    spread = data["test_accuracy_over_seeds"]
    values = spread["values"]
    if not spread["n"] == len(values) == len(data["seeds"]):
        raise _refuse(
            path,
            f"n = {spread['n']} but {len(values)} values and {len(data['seeds'])} seeds",
        )
    mean = statistics.fmean(values)
    for name, figure in (("the mean", spread["mean"]), ("test_accuracy", data["test_accuracy"])):
        if not math.isclose(figure, mean, abs_tol=1e-9):
            raise _refuse(path, f"{name} is {figure}, but its values average {mean}")
