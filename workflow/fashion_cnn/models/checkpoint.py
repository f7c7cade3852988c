"""Self-describing checkpoints: any later step rebuilds the model from the file alone.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file that carries a pickled object (code) is refused, never run.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from pathlib import Path

import jsonschema
import torch
from torch import nn

from fashion_cnn.config.schema import Validator, fill_defaults, schema_at
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_bytes
from fashion_cnn.models.catalog import MODELS, build_model

FORMAT = "fashion-cnn-checkpoint/1"
# What later steps read from a checkpoint, with the type each must have.
REQUIRED = {
    "experiment": str,
    "model": dict,
    "model_state": dict,
    "config": dict,
    "engine": dict,
    "progress": dict,
    "seed": int,
    "weights_source": str,
    "training_images": int,
    "precision": str,
    "provenance": dict,
}
REQUIRED_PROGRESS = {"epoch": int, "training_seconds": (int, float), "history": list}


def settings_fingerprint(*parts) -> str:
    """A short hash of the settings a training state depends on (resume only when they match)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Serialise in memory, then write atomically: torch.save's own file writer turns a full disk
    into an obscure RuntimeError, a plain write gives OSError(ENOSPC) that is reported clearly."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getbuffer())


def _plain_pickle(path: Path) -> bool:
    """pickle.dump's output (protocol 2 or later) rather than torch.save's zip archive."""
    with path.open("rb") as handle:
        return handle.read(1) == b"\x80"


def load_file(path: str | Path, what: str = "checkpoint") -> dict:
    """torch.load with weights_only=True; every failure becomes a UserError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"The {what} {path} is a folder, not a file. Give the path of the file itself (a "
            "run's checkpoint is results/<experiment>/seed-<n>/model.pt)."
        )
    if not path.is_file():
        raise UserError(
            f"The {what} {path} does not exist. Check the path, or rerun the step that makes it."
        )
    try:
        with warnings.catch_warnings():
            # a plain pickle's protocol draws torch's warning before the paragraph below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        globals_line = [line for line in str(error).splitlines() if "GLOBAL" in line]
        if not globals_line and _plain_pickle(path):
            raise UserError(
                f"The {what} {path} is a plain Python pickle, not a file torch.save writes (a zip "
                "archive). It was not loaded: unpickling can run code, and weights are read only "
                "from torch.save's format. Save the weights with torch.save(model.state_dict(), "
                "path), or give a checkpoint written by fashion-cnn."
            ) from error
        if not globals_line:  # not a pickle of objects at all: garbage or a broken file
            raise UserError(
                f"The {what} {path} is corrupt or not a PyTorch file (it does not unpickle). "
                "Replace it with a good copy, or delete it and rerun the step that makes it."
            ) from error
        raise UserError(
            f"Refused to load {path}: it holds Python objects that could run code when unpickled "
            f"({globals_line[0].strip()}), so loading with weights_only=True stopped before any "
            "of it ran. Only load files from people you trust; ask for a plain state_dict or a "
            "checkpoint written by fashion-cnn."
        ) from error
    except Exception as error:  # a damaged file fails in many ways (IndexError, KeyError, ...)
        raise UserError(
            f"The {what} {path} is corrupt or not a PyTorch file ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}). Replace it with a "
            "good copy, or delete it and rerun the step that makes it."
        ) from error


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by train_model, checked key by key before any step relies on it."""
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a fashion-cnn checkpoint (no '{FORMAT}' format tag): it may be a bare "
            "state_dict or a file of another tool. Point to a model.pt written by train_model."
        )
    fix = (
        "It was edited by hand or written by another version of fashion-cnn. Use the model.pt "
        "train_model wrote, or delete it and rerun train_model."
    )
    problems = _missing_or_mistyped(state, REQUIRED, "")
    if not problems:
        problems = _missing_or_mistyped(state["progress"], REQUIRED_PROGRESS, "progress.")
    if problems:
        raise UserError(f"The checkpoint {path} is incomplete: {'; '.join(problems)}. {fix}")
    model = state["model"]
    if model.get("name") not in MODELS or not isinstance(model.get("arguments"), dict):
        raise UserError(
            f"The checkpoint {path} names an unknown model {model.get('name')!r} (known: "
            f"{', '.join(MODELS)}) or carries no model arguments. {fix}"
        )
    _check_settings(state, path, fix)
    return state


def _missing_or_mistyped(mapping: dict, required: dict, prefix: str) -> list[str]:
    problems = []
    for key, kind in required.items():
        if key not in mapping:
            problems.append(f"no '{prefix}{key}'")
        elif not isinstance(mapping[key], kind) or isinstance(mapping[key], bool):
            problems.append(f"'{prefix}{key}' is a {type(mapping[key]).__name__}")
    return problems


def _check_settings(state: dict, path, fix: str) -> None:
    """The experiment settings and model arguments inside a checkpoint obey the config schema, so
    a hand-edited file cannot ask for a model of absurd size or a setting no config allows."""
    schema = schema_at("experiments.*")
    fill_defaults(state["config"], schema)
    arguments = state["model"]["arguments"]
    unknown = sorted(set(arguments) - set(schema["properties"]))
    error = jsonschema.exceptions.best_match(
        Validator(schema).iter_errors({**state["config"], **arguments})
    )
    if unknown or error is not None:
        what = f"unknown model argument {unknown[0]!r}" if unknown else error.message
        where = "" if unknown else f" at {'.'.join(map(str, error.absolute_path)) or 'config'}"
        raise UserError(
            f"The checkpoint {path} holds settings no config allows ({what}{where}). {fix}"
        )


def load_state_into(model: nn.Module, state_dict: dict, source: str, model_name: str) -> None:
    """load_state_dict, strict, with a clear error when the architecture does not match."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        expected, given = set(model.state_dict()), set(state_dict)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        shapes = [
            key
            for key in sorted(expected & given)
            if tuple(model.state_dict()[key].shape) != tuple(state_dict[key].shape)
        ]
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}"
                if missing
                else "",
                f"unexpected {', '.join(unexpected[:4])}{' …' if len(unexpected) > 4 else ''}"
                if unexpected
                else "",
                f"wrong shape {', '.join(shapes[:4])}" if shapes else "",
            )
            if part
        )
        raise UserError(
            f"The weights in {source} do not fit model '{model_name}' ({detail or error}). They "
            "belong to another architecture: use a checkpoint trained with this experiment's model, "
            "or change the experiment's model to match the file."
        ) from error


def model_from_checkpoint(state: dict, source: str = "the checkpoint") -> nn.Module:
    name, arguments = state["model"]["name"], state["model"]["arguments"]
    model = build_model(name, arguments)
    load_state_into(model, state["model_state"], source, name)
    broken = [
        key
        for key, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        raise UserError(
            f"The weights in {source} hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{' …' if len(broken) > 3 else ''}): the file was edited, or comes from a training "
            "run that diverged before fashion-cnn stopped such runs. Retrain: delete it and its "
            "train_state.pt and rerun train_model."
        )
    model.eval()
    return model
