"""Load, complete and validate the workflow configuration.

Snakemake (``workflow/rules/common.smk``) and the command line both go through
``validate_config``, so a mistake is caught before any job starts and named in one paragraph:
the schema's checks (``schema``), then the checks past it (``checks``); the machine's own
(``site``) are Snakemake's to call. This module must not import torch: Snakemake imports it on
the login node, where the CUDA stack may live only inside the container.
"""

from __future__ import annotations

import copy
import json
import os

import jsonschema
import yaml

from fashion_cnn.config.checks import check_consistency, check_finite, check_size
from fashion_cnn.config.schema import (
    FIX,
    Validator,
    describe_error,
    fill_defaults,
    load_schema,
    schema_at,
    without_defaults,
)
from fashion_cnn.config.settings import EngineSettings
from fashion_cnn.config.sweeps import (
    RunSpec,
)
from fashion_cnn.core.errors import UserError

MAX_CONFIG_BYTES = 1_000_000


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML (or JSON) config file; a syntax error becomes a UserError."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise UserError(
                f"Config file {path} is {size:,} bytes, more than the {MAX_CONFIG_BYTES:,} a config "
                "may have (this project's own is a few kilobytes). Check that it is the file you "
                "meant."
            )
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
    """Deep-merge ``override`` into a copy of ``base``, as Snakemake merges config files
    (``snakemake.utils.update_config``): a mapping merges into a mapping and replaces anything
    else, except an empty one, which leaves what was there."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict):
            current = merged.get(key, {})
            if value:
                merged[key] = merge(current if isinstance(current, dict) else {}, value)
            else:
                merged[key] = current
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(config: dict) -> dict:
    """Fill defaults into ``config`` in place, validate it and check conflicts.

    Returns the same dict. Raises UserError with one paragraph naming the key, the value and what
    is allowed.
    """
    if not isinstance(config, dict):
        raise UserError("Config error: the configuration must be a mapping of keys.")
    schema = load_schema()
    check_size(config)
    check_finite(config)
    fill_defaults(config, schema)
    validator = Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise UserError(describe_error(error) + " " + FIX)
    check_consistency(config)
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
        # self-training: the chain of teachers too, so that the job's own config can check that
        # each fits its student (and the job reruns when a teacher's recipe changes)
        "experiments": {**_teachers(config, settings, seed), experiment: settings},
        "engine": config["engine"],
        "pretrained": config["pretrained"],
        "export": config["export"],
    }
    return json.dumps(without_defaults(subset, load_schema()), sort_keys=True)


def _teachers(config: dict, settings: dict, seed: int | None) -> dict:
    """The experiments whose models label a run's unlabelled images, round by round; for one
    replicate, each as its model of that seed (so a seed added to a teacher reruns no student)."""
    teachers: dict = {}
    name = settings.get("teacher", "")
    while name and name not in teachers and name in config["experiments"]:
        teacher = dict(config["experiments"][name])
        if seed is not None:
            teacher["seed"] = int(seed)
            teacher.pop("seeds", None)
        teachers[name] = teacher
        name = teacher.get("teacher", "")
    return teachers


def default_engine_settings() -> EngineSettings:
    """The engine section as a config that sets nothing gets it: every schema default."""
    engine: dict = {}
    fill_defaults(engine, schema_at("engine"))
    return EngineSettings.from_dict(engine)


def get_experiment(config: dict, name: str) -> dict:
    try:
        experiment: dict = config["experiments"][name]
        return experiment
    except KeyError:
        known = ", ".join(sorted(config["experiments"]))
        raise UserError(
            f"No experiment named '{name}' in the config. Defined experiments: {known}."
        ) from None
