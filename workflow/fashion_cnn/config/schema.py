"""The config schema (``workflow/schemas/config.schema.yaml``) and what reads it: loading it
with the registries' names filled in, defaults, the subschema of one key, argparse types that
check a command-line value as the config checks the same key, and the one-paragraph message for
a schema error. Torch-free (Snakemake imports it on the login node)."""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from fashion_cnn.config import choices

SCHEMA_PATH = Path(__file__).resolve().parent.parent.parent / "schemas" / "config.schema.yaml"


def _strict_pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterable[Any]:
    """`pattern` as the whole value: jsonschema's own uses re.search, where `$` also matches
    before a final newline, so "cpu\n" (a YAML block scalar's end) passed `^(auto|cpu)$`."""
    if validator.is_type(instance, "string") and re.fullmatch(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_integer(checker: Any, instance: Any) -> bool:
    """An integer is an int: jsonschema's own also takes 32.0, which became seed-43.0 folders
    and tracebacks in jobs; a bool is no integer either."""
    return isinstance(instance, int) and not isinstance(instance, bool)


# The validator every schema of this project is checked with (the config, a command-line
# value, a checkpoint's settings, a ledger record).
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _strict_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


FIX = "Fix it in config.yaml (or in the --config/--configfile override that sets it)."


# Experiment keys that name a registered choice, and the kind of choice in the catalog
# (config.choices, written from the registries by `make choices`): their enum is its names.
REGISTRY_KEYS = {
    "model": "model",
    "augmentation": "augmentation",
    "strong_augmentation": "augmentation",
    "optimizer": "optimizer",
    "lr_schedule": "lr_schedule",
    "pseudo_label_thresholds": "pseudo_label_thresholds",
}


@functools.cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        schema: dict = yaml.safe_load(handle)
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


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def location(path: Iterable[object]) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "the top level"


# A schema error's paragraph, from the error, where it is, its value as JSON and the key's hint.
Message = Callable[[jsonschema.ValidationError, str, str, str], str]

NUMBER_AS_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def describe_error(error: jsonschema.ValidationError, where: str | None = None) -> str:
    """A schema error as one paragraph: the key, its value, what it must be, and the key's own
    description from the schema where it has one."""
    where = where or location(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = (
        f" ({schema['description'].strip()})" if isinstance(schema.get("description"), str) else ""
    )
    value = json.dumps(error.instance)
    kind = "propertyNames" if "propertyNames" in error.schema_path else str(error.validator)
    if kind == "minLength" and error.validator_value != 1:
        kind = "other"
    message: Message = _MESSAGES.get(kind, _other)
    return message(error, where, value, hint)


def _unknown_key(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = sorted(schema.get("properties", {}))
    unknown = sorted(set(cast(dict, error.instance)) - set(allowed))
    bad = unknown[0] if unknown else "?"
    return (
        f"Config error: unknown key '{bad}' in {where}.{did_you_mean(bad, allowed)} "
        f"Allowed keys there: {', '.join(allowed)}."
    )


def _not_allowed(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    allowed = ", ".join(json.dumps(option) for option in cast(list, error.validator_value))
    return f"Config error: {where} = {value} is not allowed; choose one of {allowed}{hint}."


def _wrong_type(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    yaml_hint = ""
    if isinstance(error.instance, str) and NUMBER_AS_TEXT.match(error.instance.strip()):
        mantissa, exponent = re.split("[eE]", error.instance.strip())
        mantissa = mantissa if "." in mantissa else mantissa + ".0"
        yaml_hint = (
            f" YAML reads {error.instance} as text because the number has no decimal point: "
            f"write {mantissa}e{exponent}."
        )
    if isinstance(error.instance, float) and error.instance.is_integer():
        yaml_hint = f" A whole number is written without a decimal point: {int(error.instance)}."
    return (
        f"Config error: {where} = {value} has the wrong type; "
        f"it must be {error.validator_value}{hint}.{yaml_hint}"
    )


RANGE_WORDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}


def _out_of_range(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    return (
        f"Config error: {where} = {value} is out of range; "
        f"it must be {RANGE_WORDS[str(error.validator)]} {error.validator_value}{hint}."
    )


def _bad_name(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    return (
        f"Config error: {'sweep' if where == 'sweeps' else 'experiment'} name {value} in "
        f"{where} is not allowed; use lower-case "
        "letters, digits and underscores, starting with a letter (it becomes a folder name)."
    )


def _other(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
    return f"Config error at {where}: {error.message}{hint}."


def _template(text: str) -> Message:
    """A message that fills in {where}, {value}, {limit} (the schema's value), {hint} and
    {message} (jsonschema's own)."""

    def message(error: jsonschema.ValidationError, where: str, value: str, hint: str) -> str:
        return text.format(
            where=where, value=value, limit=error.validator_value, hint=hint, message=error.message
        )

    return message


_MESSAGES = {
    "additionalProperties": _unknown_key,
    "enum": _not_allowed,
    "type": _wrong_type,
    **dict.fromkeys(RANGE_WORDS, _out_of_range),
    "propertyNames": _bad_name,
    "minItems": _template(
        "Config error: {where} = {value} has too few values; give at least {limit}{hint}."
    ),
    "maxItems": lambda error, where, value, hint: (
        f"Config error: {where} has {len(cast(list, error.instance)):,} values, more than the "
        f"{error.validator_value} allowed{hint}."
    ),
    "uniqueItems": _template(
        "Config error: {where} = {value} lists a value twice; list each once{hint}."
    ),
    "minProperties": _template("Config error: {where} is empty; give it at least one key{hint}."),
    "minLength": _template("Config error: {where} is empty{hint}; give it a value."),
    "multipleOf": _template("Config error: {where} = {value} must be a multiple of {limit}{hint}."),
    "pattern": lambda error, where, value, hint: (
        f"Config error: {where} = {value} has the wrong form (must match "
        f"{error.validator_value}){hint}."
        + (
            " It ends in a line break or space (a YAML `key: |` block keeps one): write the "
            "value on the key's line."
            if isinstance(error.instance, str) and error.instance != error.instance.rstrip()
            else ""
        )
    ),
    "required": _template("Config error: {where} lacks a required key: {message}."),
}


def without_defaults(instance: Any, schema: dict) -> Any:
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


def schema_at(dotted: str) -> dict:
    """The subschema of one key, e.g. ``engine.device``; ``experiments.*.seed`` for experiment
    keys."""
    node: dict = load_schema()  # a copy: argparse types and checkpoint checks may keep it
    for part in dotted.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def argument_type(schema: dict | str, kind: type = str) -> Callable[[str], Any]:
    """An argparse ``type=`` that validates one command-line value the way the config validates
    the same key: the command line and Snakemake share one set of types and ranges."""
    if isinstance(schema, str):
        schema = schema_at(schema)
    validator = Validator(schema)
    names = {int: "an integer", float: "a number", str: "text"}

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {names[kind]}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            message = describe_error(error, where="the value").removeprefix("Config error: ")
            raise argparse.ArgumentTypeError(message.replace("the value = ", "", 1).rstrip("."))
        return value

    parse.__name__ = names[kind]  # argparse names the type in its messages
    return parse
