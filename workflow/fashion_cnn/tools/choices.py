"""The catalog of choices: every registry's entries described without torch, written to
``workflow/schemas/choices.json`` for the config layer (which Snakemake imports where torch may be
absent). ``make choices`` writes it; ``make lint`` (``--check``) fails while it differs from the
registries, so a new model, preset, optimizer, schedule or threshold reaches the config in the
same change.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from fashion_cnn.config.choices import CATALOG_PATH
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_text
from fashion_cnn.data.augment import PRESETS
from fashion_cnn.models.catalog import MODELS
from fashion_cnn.training.losses import THRESHOLDS
from fashion_cnn.training.optim import OPTIMIZERS, SCHEDULES


def _flags(entry: Any) -> dict[str, Any]:
    """An entry's plain fields (its description and flags), leaving out what runs."""
    return {
        item.name: getattr(entry, item.name)
        for item in dataclasses.fields(entry)
        if isinstance(getattr(entry, item.name), str | bool | int | float)
    }


def catalog() -> dict[str, dict[str, Any]]:
    return {
        "model": {name: MODELS.get(name).catalog() for name in MODELS},
        "augmentation": {name: {} for name in PRESETS},
        "optimizer": {name: _flags(OPTIMIZERS.get(name)) for name in OPTIMIZERS},
        "lr_schedule": {name: _flags(SCHEDULES.get(name)) for name in SCHEDULES},
        "pseudo_label_thresholds": {name: {} for name in THRESHOLDS},
    }


def render() -> str:
    return json.dumps(catalog(), indent=2) + "\n"


def write_or_check(check: bool, path: Path = CATALOG_PATH) -> None:
    text = render()
    if not check:
        write_text(path, text)
        print(f"wrote {path}")
        return
    if not path.is_file() or path.read_text() != text:
        raise UserError(
            f"{path} does not describe the registries as they are now (a model, preset, "
            "optimizer, schedule or threshold was added or changed). Run `make choices` and "
            "commit the file."
        )
    print(f"{path} is up to date")
