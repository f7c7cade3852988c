"""Load, complete and validate the workflow configuration.

Snakemake (``workflow/rules/common.smk``) and the command line both go through
``validate_config``, so a mistake is caught before any job starts and named in one paragraph.
This module must not import torch: Snakemake imports it on the login node, where the CUDA stack
may live only inside the container.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fashion_cnn import TRAINING_IMAGES
from fashion_cnn.config import choices
from fashion_cnn.config.settings import EngineSettings, unlabelled_count
from fashion_cnn.config.sweeps import (
    NOT_SWEPT,
    SWEEPS_FOLDER,
    RunSpec,
    point_settings,
    sweep_points,
)
from fashion_cnn.core.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parent.parent.parent / "schemas" / "config.schema.yaml"
FIX = "Fix it in config.yaml (or in the --config/--configfile override that sets it)."


# Experiment keys that name a registered choice, and the kind of choice in the catalog
# (config.choices, written from the registries by `make choices`): their enum is its names.
REGISTRY_KEYS = {
    "model": "model",
    "augmentation": "augmentation",
    "strong_augmentation": "augmentation",
    "optimizer": "optimizer",
    "lr_schedule": "lr_schedule",
}


@functools.cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        schema = yaml.safe_load(handle)
    experiment = schema["properties"]["experiments"]["additionalProperties"]
    properties = experiment["properties"]
    for key, kind in REGISTRY_KEYS.items():
        properties[key]["enum"] = choices.names(kind)
    properties["model"]["description"] = "; ".join(
        f"{name}: {choices.model(name)['description']}" for name in choices.names("model")
    )
    # a model's options are experiment keys too, each model's own range checked when it is chosen
    properties.update(choices.flat_option_schemas())
    experiment["allOf"] = choices.model_option_rules()
    return schema


def load_schema() -> dict:
    """The config schema, read once per process; each caller gets its own copy."""
    return copy.deepcopy(_schema())


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML (or JSON) config file; a syntax error becomes a UserError."""
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError as error:
        raise UserError(f"Config file {path} does not exist. Check the path.") from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" near line {where.line + 1}" if where else ""
        raise UserError(
            f"Config file {path} is not valid YAML{line}: {getattr(error, 'problem', error)}. "
            "Fix the syntax (indentation, colons, quotes)."
        ) from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"Config file {path} must hold a mapping of keys, not {type(data).__name__}."
        )
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (how Snakemake merges config files)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def fill_defaults(instance: Any, schema: dict) -> None:
    """Fill schema defaults into ``instance`` in place (objects only, recursively)."""
    if not isinstance(instance, dict):
        return
    properties = schema.get("properties", {})
    for key, subschema in properties.items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if key in instance:
            fill_defaults(instance[key], subschema)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in properties:
                fill_defaults(value, extra)


def _did_you_mean(name, options) -> str:
    """' Did you mean 'x'?' for the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _location(path) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "the top level"


NUMBER_AS_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _describe(error: jsonschema.ValidationError, where: str | None = None) -> str:
    where = where or _location(error.absolute_path)
    schema = error.schema
    hint = (
        f" ({schema['description'].strip()})" if isinstance(schema.get("description"), str) else ""
    )
    value = json.dumps(error.instance)
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        bad = unknown[0] if unknown else "?"
        suggestion = _did_you_mean(bad, allowed)
        return (
            f"Config error: unknown key '{bad}' in {where}.{suggestion} "
            f"Allowed keys there: {', '.join(allowed)}."
        )
    if kind == "enum":
        allowed = ", ".join(json.dumps(option) for option in error.validator_value)
        return f"Config error: {where} = {value} is not allowed; choose one of {allowed}{hint}."
    if kind == "type":
        yaml_hint = ""
        if isinstance(error.instance, str) and NUMBER_AS_TEXT.match(error.instance.strip()):
            mantissa, exponent = re.split("[eE]", error.instance.strip())
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            yaml_hint = (
                f" YAML reads {error.instance} as text because the number has no decimal point: "
                f"write {mantissa}e{exponent}."
            )
        return (
            f"Config error: {where} = {value} has the wrong type; "
            f"it must be {error.validator_value}{hint}.{yaml_hint}"
        )
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "greater than",
            "exclusiveMaximum": "less than",
        }
        return (
            f"Config error: {where} = {value} is out of range; "
            f"it must be {words[kind]} {error.validator_value}{hint}."
        )
    if kind == "propertyNames" or "propertyNames" in error.schema_path:
        return (
            f"Config error: {'sweep' if where == 'sweeps' else 'experiment'} name {value} in "
            f"{where} is not allowed; use lower-case "
            "letters, digits and underscores, starting with a letter (it becomes a folder name)."
        )
    if kind == "minItems":
        return (
            f"Config error: {where} = {value} has too few values; give at least "
            f"{error.validator_value}{hint}."
        )
    if kind == "uniqueItems":
        return f"Config error: {where} = {value} lists a value twice; list each once{hint}."
    if kind == "minProperties":
        return f"Config error: {where} is empty; give it at least one key{hint}."
    if kind == "minLength" and error.validator_value == 1:
        return f"Config error: {where} is empty{hint}; give it a value."
    if kind == "multipleOf":
        return (
            f"Config error: {where} = {value} must be a multiple of {error.validator_value}{hint}."
        )
    if kind == "pattern":
        return (
            f"Config error: {where} = {value} has the wrong form "
            f"(must match {error.validator_value}){hint}."
        )
    if kind == "required":
        return f"Config error: {where} lacks a required key: {error.message}."
    return f"Config error at {where}: {error.message}{hint}."


def _check_finite(instance: Any, path: tuple = ()) -> None:
    """NaN and infinity compare false with every bound, so the schema's ranges let them through."""
    if isinstance(instance, dict):
        for key, value in instance.items():
            _check_finite(value, (*path, key))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            _check_finite(value, (*path, index))
    elif isinstance(instance, float) and not math.isfinite(instance):
        raise UserError(
            f"Config error: {_location(path)} = {instance} is not a finite number. Write an "
            "ordinary number there (for example 1.0e-3). " + FIX
        )


def _check_folders(config: dict) -> None:
    for key in ("results", "resources"):
        folder = Path(config[key])
        if folder.resolve() == Path(folder.resolve().anchor):
            raise UserError(
                f'Config error: {key} = "{config[key]}" is the root of the file system; the '
                "workflow would write its folders there. Name a folder of its own, such as "
                f"{key}: {key}. " + FIX
            )


def _check_consistency(config: dict) -> None:
    """Conflicts the schema cannot express, named before any job starts."""
    _check_folders(config)
    experiments = config["experiments"]
    for name in config["run_experiments"]:
        if name not in experiments:
            suggestion = _did_you_mean(name, list(experiments))
            raise UserError(
                f"Config error: run_experiments names '{name}', which is not an experiment "
                f"under experiments.{suggestion} Defined experiments: {', '.join(sorted(experiments))}. "
                + FIX
            )
    for index, pair in enumerate(config["comparisons"]):
        for side in ("a", "b"):
            if pair[side] not in experiments:
                suggestion = _did_you_mean(pair[side], list(experiments))
                raise UserError(
                    f"Config error: comparisons.{index}.{side} names '{pair[side]}', which is not "
                    f"an experiment under experiments.{suggestion} " + FIX
                )
        if pair["a"] == pair["b"]:
            raise UserError(
                f"Config error: comparisons.{index} compares {pair['a']} with itself. " + FIX
            )
    for name, experiment in experiments.items():
        if name in RESERVED_NAMES:
            raise UserError(
                f"Config error: experiments.{name}: '{name}' is the name of a folder the workflow "
                f"keeps beside the experiments in results/ ({', '.join(sorted(RESERVED_NAMES))}). "
                "Rename the experiment."
            )
        _check_experiment(f"experiments.{name}", experiment)
    _check_sweeps(config)


# Folders in results/ that are not experiments.
RESERVED_NAMES = {"benchmarks", "comparisons", "data", "logs", "summary", SWEEPS_FOLDER}


def _check_experiment(where: str, experiment: dict, key=None) -> None:
    """Conflicts between one experiment's keys (an experiment, or a sweep's point). ``where``
    names the experiment; ``key(name)`` names one of its keys (default: where.name)."""
    key = key or (lambda name: f"{where}.{name}")
    weights = experiment["weights"]
    _check_model_fits(experiment, key)
    held_out = experiment["validation_images"]
    unlabelled = experiment["unlabelled_images"] if experiment["train_subset"] else 0
    unlabelled = unlabelled_count(experiment) if unlabelled == "all" else unlabelled
    if held_out and experiment["train_subset"] + held_out > TRAINING_IMAGES:
        raise UserError(
            f"Config error: {where} trains on the first {experiment['train_subset']} images and "
            f"holds out the last {held_out} for validation, which would overlap (there are "
            f"{TRAINING_IMAGES:,} training images). Make train_subset + validation_images at "
            "most 60000."
        )
    if experiment["unlabelled_images"] and not experiment["train_subset"]:
        raise UserError(
            f"Config error: {key('unlabelled_images')} = {experiment['unlabelled_images']}, but train_subset is 0 (every "
            "training image labelled), so no image is left to use without its label. Set "
            "train_subset to the number of labelled images (e.g. 500)."
        )
    if unlabelled and experiment["train_subset"] + unlabelled + held_out > TRAINING_IMAGES:
        raise UserError(
            f"Config error: {where} uses the first {experiment['train_subset']} images with their "
            f"labels, the next {unlabelled} without, and holds out the last {held_out}: more than "
            f"the {TRAINING_IMAGES:,} training images. Make train_subset + unlabelled_images + "
            "validation_images at most 60000."
        )
    if experiment["pseudo_labels_from"] == "average" and not (
        experiment["ema_decay"] and unlabelled
    ):
        raise UserError(
            f'Config error: {key("pseudo_labels_from")} = "average" takes the pseudo-labels from '
            "the moving average of the weights, so it needs semi-supervised training "
            "(unlabelled_images) with ema_decay above 0 (e.g. 0.99); this experiment has "
            f"unlabelled_images {experiment['unlabelled_images']} and ema_decay "
            f"{experiment['ema_decay']}. Set both, or pseudo_labels_from: model."
        )
    if experiment["distribution_alignment"] and not unlabelled:
        raise UserError(
            f"Config error: {key('distribution_alignment')} aligns the pseudo-labels of the "
            "unlabelled images with the class shares, but this experiment has none "
            f"(unlabelled_images {experiment['unlabelled_images']}, train_subset "
            f"{experiment['train_subset']}). Set train_subset and unlabelled_images (e.g. all), "
            "or remove distribution_alignment."
        )
    if experiment["ema_warmup"] and not experiment["ema_decay"]:
        raise UserError(
            f"Config error: {key('ema_warmup')} ramps up the moving average's decay, but "
            "ema_decay is 0 (no moving average). Set ema_decay (e.g. 0.99), or remove ema_warmup."
        )
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise UserError(
            f'Config error: {key("weights")} = "{weights}" is neither none nor imagenet, so '
            "it is read as a path to a .pth state_dict, and no such file exists. Give the "
            "right path (relative to the folder you run snakemake in), or use none or imagenet."
        )
    if experiment["output_softmax"] and experiment["label_smoothing"] > 0:
        raise UserError(
            f"Config error: {where} sets both output_softmax and label_smoothing; the "
            "chapter's softmax-then-CrossEntropyLoss reproduction is meant to be exact. Use one."
        )


def _check_model_fits(experiment: dict, key) -> None:
    """The experiment asks its model only for what the model's registry entry says it has."""
    model, weights = experiment["model"], experiment["weights"]
    entry = choices.model(model)

    def refuse(setting: str, value, what: str, capability: str) -> None:
        able = ", ".join(choices.models_with(capability))
        raise UserError(
            f"Config error: {key(setting)} = {json.dumps(value)} needs a model {what} ({able}), but "
            f"the model is {model}. Change {setting}, or choose one of those models."
        )

    if weights == "imagenet" and not entry["pretrained"]:
        refuse("weights", weights, "with published ImageNet weights", "pretrained")
    if weights.endswith(".safetensors") and not entry["reads_safetensors"]:
        refuse(
            "weights", weights, "that reads Google's .safetensors checkpoint", "reads_safetensors"
        )
    if experiment["dropout"] and not entry["takes_dropout"]:
        raise UserError(
            f"Config error: {key('dropout')} = {experiment['dropout']}, but model {model} has no "
            f"dropout here (models with dropout: {', '.join(choices.models_with('takes_dropout'))})."
            " Set dropout: 0, or choose one of those models."
        )
    for option, owners in choices.option_owners().items():
        default = choices.model(owners[0])["options"][option]["default"]
        if model not in owners and experiment.get(option, default) != default:
            own = ", ".join(entry["options"]) or "none"
            raise UserError(
                f"Config error: {key(option)} = {json.dumps(experiment[option])} is an option of "
                f"{', '.join(owners)}; model {model} has no such option (its options: {own}). "
                f"Remove {option}, or choose one of those models."
            )
    if experiment.get("conv1_init", "random") != "random" and weights == "none":
        raise UserError(
            f'Config error: {key("conv1_init")} = "{experiment["conv1_init"]}" averages '
            "pretrained RGB filters, so it needs weights imagenet or a path. Set conv1_init: "
            "random, or give pretrained weights."
        )


def _check_sweeps(config: dict) -> None:
    """Every sweep names an experiment, sweeps keys an experiment has, and gives each key values
    that key accepts (checked with the experiment schema, as in an experiment); its points have
    distinct folder names. run_sweeps names sweeps."""
    experiments = config["experiments"]
    experiment_schema = _schema()["properties"]["experiments"]["additionalProperties"]
    validator = jsonschema.Draft202012Validator(experiment_schema)
    for name, sweep in config["sweeps"].items():
        where = f"sweeps.{name}"
        base = sweep["experiment"]
        if base not in experiments:
            suggestion = _did_you_mean(base, list(experiments))
            raise UserError(
                f"Config error: {where}.experiment names '{base}', which is not an experiment "
                f"under experiments.{suggestion} Defined experiments: "
                f"{', '.join(sorted(experiments))}. " + FIX
            )
        known = sorted(experiment_schema["properties"])
        for key, values in sweep["grid"].items():
            if key in NOT_SWEPT:
                raise UserError(
                    f"Config error: {where}.grid sweeps '{key}', which a sweep does not set: "
                    f"{NOT_SWEPT[key]}. " + FIX
                )
            if key not in known:
                suggestion = _did_you_mean(key, known)
                raise UserError(
                    f"Config error: {where}.grid sweeps '{key}', which is not an experiment key."
                    f"{suggestion} Experiment keys: {', '.join(known)}. " + FIX
                )
            for index, value in enumerate(values):
                trial = dict(experiments[base], **{key: value})
                error = jsonschema.exceptions.best_match(validator.iter_errors(trial))
                if error is not None:
                    raise UserError(
                        _describe(error, where=f"{where}.grid.{key}[{index}]")
                        + f" (Every value in a grid is checked as experiments.{base}.{key} would be.) "
                        + FIX
                    )
        folders: dict[str, dict] = {}
        for point in sweep_points(name, sweep):
            if point.folder in folders:
                raise UserError(
                    f"Config error: {where}.grid gives two points the same folder name "
                    f"'{point.folder}': {json.dumps(folders[point.folder])} and "
                    f"{json.dumps(point.values)}. A value is listed twice, or two values differ "
                    "only in characters a folder name cannot hold. List each value once. " + FIX
                )
            folders[point.folder] = point.values
        for point in sweep_points(name, sweep):
            _check_experiment(
                f"{where}, point {point.folder},",
                point_settings(config, point),
                key=lambda key, point=point: f"{key} ({where}, point {point.folder})",
            )
    for name in config["run_sweeps"]:
        if name not in config["sweeps"]:
            suggestion = _did_you_mean(name, list(config["sweeps"]))
            defined = ", ".join(sorted(config["sweeps"])) or "none"
            raise UserError(
                f"Config error: run_sweeps names '{name}', which is not a sweep under "
                f"sweeps.{suggestion} Defined sweeps: {defined}. " + FIX
            )


def validate_config(config: dict) -> dict:
    """Fill defaults into ``config`` in place, validate it and check conflicts.

    Returns the same dict. Raises UserError with one paragraph naming the key, the value and what
    is allowed.
    """
    if not isinstance(config, dict):
        raise UserError("Config error: the configuration must be a mapping of keys.")
    schema = load_schema()
    _check_finite(config)
    fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise UserError(_describe(error) + " " + FIX)
    _check_consistency(config)
    for experiment in config["experiments"].values():
        if experiment["seeds"] is None:
            experiment["seeds"] = [experiment["seed"]]
    return config


def load_config(configfiles: list[str], overrides: list[str]) -> dict:
    """Config for the command line: files then JSON overrides, merged in order, validated."""
    config: dict = {}
    for path in configfiles:
        config = merge(config, read_config_file(path))
    for text in overrides:
        try:
            override = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(
                f"--config-json is not valid JSON ({error}). Quote it in the shell."
            ) from error
        if not isinstance(override, dict):
            raise UserError("--config-json must be a JSON object.")
        config = merge(config, override)
    if not config:
        raise UserError("No configuration given: pass --configfile config.yaml (or --config-json).")
    return validate_config(config)


def without_defaults(instance, schema: dict):
    """``instance`` minus the values that equal their schema default (recursively)."""
    if not isinstance(instance, dict):
        return instance
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    kept = {}
    for key, value in instance.items():
        subschema = properties.get(key, extra if isinstance(extra, dict) else {})
        if "default" in subschema and value == subschema["default"]:
            continue
        kept[key] = without_defaults(value, subschema)
    return kept


def experiment_settings(config: dict, run: str | RunSpec, seed: int | None = None) -> str:
    """The part of the config one experiment's jobs depend on, as JSON for a rule's params.

    Rules pass it to the command line (which validates it and fills the defaults back in), so a
    job reruns when, and only when, its own settings change. Values equal to their schema default
    are left out: a new option with a default does not rerun every finished experiment. For one
    replicate (``seed``), the experiment's seed is that seed and the list of seeds is left out:
    adding a seed reruns no finished one.
    """
    if isinstance(run, str):
        run = RunSpec(run, run, config["experiments"][run])
    experiment = run.experiment  # a sweep's point: its base experiment, with the point's values
    settings = dict(run.settings)
    if seed is not None:
        settings["seed"] = int(seed)
        settings.pop("seeds")
    subset = {
        "run_experiments": [experiment],
        "experiments": {experiment: settings},
        "engine": config["engine"],
        "pretrained": config["pretrained"],
        "export": config["export"],
    }
    return json.dumps(without_defaults(subset, load_schema()), sort_keys=True)


def default_engine_settings() -> EngineSettings:
    """The engine section as a config that sets nothing gets it: every schema default."""
    engine: dict = {}
    fill_defaults(engine, schema_at("engine"))
    return EngineSettings.from_dict(engine)


def schema_at(dotted: str) -> dict:
    """The subschema of one key, e.g. ``engine.device``; ``experiments.*.seed`` for experiment
    keys."""
    node = load_schema()  # a copy: argparse types and checkpoint checks may keep it
    for part in dotted.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def argument_type(schema: dict | str, kind: type = str):
    """An argparse ``type=`` that validates one command-line value the way the config validates
    the same key: the command line and Snakemake share one set of types and ranges."""
    if isinstance(schema, str):
        schema = schema_at(schema)
    validator = jsonschema.Draft202012Validator(schema)
    names = {int: "an integer", float: "a number", str: "text"}

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {names[kind]}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            message = _describe(error, where="the value").removeprefix("Config error: ")
            raise argparse.ArgumentTypeError(message.replace("the value = ", "", 1).rstrip("."))
        return value

    parse.__name__ = names[kind]  # argparse names the type in its messages
    return parse


def visible_gpus() -> int | None:
    """GPUs this machine shows to a job started here, without importing torch (Snakemake's own
    interpreter may have none); None when it cannot tell (WSL, ROCm)."""
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        count = len(list(driver.iterdir()))
    else:
        count = len(list(Path("/dev").glob("nvidia[0-9]*")))
        if not count and (Path("/dev/dxg").exists() or Path("/dev/kfd").exists()):
            return None
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        listed = [entry for entry in chosen.split(",") if entry.strip() not in ("", "-1")]
        count = min(count, len(listed))
    return count


# What Apptainer can pull (apptainer build/pull's URI formats) and Snakemake passes to it.
PULLABLE_SCHEMES = ("docker", "oras", "library", "shub", "http", "https")


def check_container_image(image: str) -> None:
    """With --use-singularity every job runs in ``image``: it must be a file that exists or a
    reference Apptainer can pull, or the first job would fail after the DAG was planned."""
    from urllib.parse import urlsplit

    scheme = urlsplit(image).scheme
    if scheme in PULLABLE_SCHEMES:
        return
    how = (
        "Build it with `make image` (Apptainer 1.2 or newer, and internet; `make image CUDA=12.8` "
        "for NVIDIA drivers older than 580), or point `container:` at an image you have: a .sif "
        "path, or a reference such as docker://ghcr.io/<you>/fashion-cnn:0.1.0 "
        "(containers/README.md). Or run without one: leave out --use-singularity, or set "
        "container: none. Nothing was run."
    )
    if "://" in image:
        raise UserError(
            f"Config error: container = {image!r} is neither a file nor a reference Apptainer can "
            f"pull ({', '.join(s + '://' for s in PULLABLE_SCHEMES)}), and --use-singularity (or "
            f"the cluster profile) runs every job in it. {how}"
        )
    if not Path(image).is_file():
        where = "does not exist" if not Path(image).exists() else "is not a file"
        raise UserError(
            f"Config error: container = {image} {where} (relative to {Path.cwd()}), and "
            f"--use-singularity (or the cluster profile) runs every job in it. {how}"
        )


def check_gpu_for_local_jobs(device: str) -> None:
    """An explicit CUDA device must exist before Snakemake removes any output to rerun a job.

    Only for jobs that run on this machine: on a cluster the GPU is on the compute node."""
    if not device.startswith("cuda"):
        return
    wanted = int(device.partition(":")[2] or 0) + 1
    found = visible_gpus()
    if found is None or found >= wanted:
        return
    raise UserError(
        f"Config error: engine.device = {device}, but this machine shows "
        f"{'no GPU' if not found else f'only {found} GPU(s)'} (no NVIDIA driver devices, or "
        "CUDA_VISIBLE_DEVICES hides them), and the jobs would run here. Nothing was run or "
        "removed. Use device: auto (GPU when present, else CPU) or cpu, or run on a GPU machine "
        "or through the cluster profile."
    )


def get_experiment(config: dict, name: str) -> dict:
    try:
        return config["experiments"][name]
    except KeyError:
        known = ", ".join(sorted(config["experiments"]))
        raise UserError(
            f"No experiment named '{name}' in the config. Defined experiments: {known}."
        ) from None
