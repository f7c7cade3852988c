"""The catalog of choices (``workflow/schemas/choices.json``): every registered model, preset,
optimizer, schedule and pseudo-label threshold, with a model's options and capabilities, as plain
data. Written from the registries by ``make choices`` (fashion_cnn.tools.choices) and held in step
by ``make lint``, so the config layer validates against the registries without importing torch."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).resolve().parent.parent.parent / "schemas" / "choices.json"


@functools.cache
def catalog() -> dict[str, dict[str, Any]]:
    with open(CATALOG_PATH) as handle:
        loaded: dict[str, dict[str, Any]] = json.load(handle)
    return loaded


def names(kind: str) -> list[str]:
    """The registered names of one kind (model, augmentation, optimizer, lr_schedule,
    pseudo_label_thresholds)."""
    return list(catalog()[kind])


def model(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = catalog()["model"][name]
    return entry


def models_with(capability: str) -> list[str]:
    return [name for name, entry in catalog()["model"].items() if entry[capability]]


def option_owners() -> dict[str, list[str]]:
    """Each model option's key and the models that have it."""
    owners: dict[str, list[str]] = {}
    for name, entry in catalog()["model"].items():
        for key in entry["options"]:
            owners.setdefault(key, []).append(name)
    return owners


def flat_option_schemas() -> dict[str, dict[str, Any]]:
    """The experiment-level schema of every model option: the constraints all its models share,
    the default they share (the catalog's test holds them equal), and each model's description.
    The model's own range is checked by ``model_option_rules``."""
    flat: dict[str, dict[str, Any]] = {}
    for key, owners in option_owners().items():
        schemas = [model(name)["options"][key] for name in owners]
        shared = {
            field: value
            for field, value in schemas[0].items()
            if field != "description" and all(s.get(field) == value for s in schemas)
        }
        lines = [f"{name}: {model(name)['options'][key]['description']}" for name in owners]
        flat[key] = {**shared, "description": " ".join(lines)}
    return flat


def model_option_rules() -> list[dict[str, Any]]:
    """JSON-schema rules (if model is X, then its options' own ranges) for the experiment schema."""
    return [
        {
            "if": {"properties": {"model": {"const": name}}, "required": ["model"]},
            "then": {
                "properties": {
                    key: {field: value for field, value in schema.items() if field != "default"}
                    for key, schema in entry["options"].items()
                }
            },
        }
        for name, entry in catalog()["model"].items()
        if entry["options"]
    ]
