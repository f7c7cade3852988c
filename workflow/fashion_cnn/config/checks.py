"""The checks past the schema: conflicts between one experiment's keys (an experiment or a
sweep's point), a model's own options, sweeps' grids, folders and names. Each failure is a
``UserError`` of one paragraph that names the key and the fix. Torch-free."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jsonschema

from fashion_cnn import TRAINING_IMAGES
from fashion_cnn.config import choices
from fashion_cnn.config.schema import (
    FIX,
    Validator,
    describe_error,
    did_you_mean,
    location,
    schema_at,
)
from fashion_cnn.config.sweeps import (
    NOT_SWEPT,
    SWEEPS_FOLDER,
    format_value,
    point_settings,
    sweep_points,
)
from fashion_cnn.core.errors import UserError

MAX_VALUES = 100_000  # this project's config.yaml has about a thousand


def check_size(config: Any) -> None:
    """Count the config's values before anything walks it recursively: YAML aliases nested a
    few deep (a "billion laughs") make a tiny file expand to billions of values, and every walk
    of them would hang with no output."""
    seen, stack = 0, [config]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UserError(
                f"Config error: the configuration expands to more than {MAX_VALUES:,} values "
                "(YAML anchors and aliases nested in each other multiply them). Write the "
                "values out, or use fewer aliases. " + FIX
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def check_finite(instance: Any, path: tuple = ()) -> None:
    """NaN and infinity compare false with every bound, so the schema's ranges let them through."""
    if isinstance(instance, dict):
        for key, value in instance.items():
            check_finite(value, (*path, key))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            check_finite(value, (*path, index))
    elif isinstance(instance, float) and not math.isfinite(instance):
        raise UserError(
            f"Config error: {location(path)} = {instance} is not a finite number. Write an "
            "ordinary number there (for example 1.0e-3). " + FIX
        )


def _check_folders(config: dict) -> None:
    for key in ("results", "resources"):
        folder = Path(config[key])
        try:
            resolved = folder.resolve()
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a link loop
            raise UserError(
                f'Config error: {key} = "{config[key]}" (or a folder above it) is a symbolic link '
                "that leads back to itself, so no file can be written under it. Point the link "
                f"at a real folder, or set {key}: to another folder. " + FIX
            ) from None
        if resolved == Path(resolved.anchor):
            raise UserError(
                f'Config error: {key} = "{config[key]}" is the root of the file system; the '
                "workflow would write its folders there. Name a folder of its own, such as "
                f"{key}: {key}. " + FIX
            )


def check_consistency(config: dict) -> None:
    """Conflicts the schema cannot express, named before any job starts."""
    _check_folders(config)
    experiments = config["experiments"]
    for name in config["run_experiments"]:
        if name not in experiments:
            suggestion = did_you_mean(name, list(experiments))
            raise UserError(
                f"Config error: run_experiments names '{name}', which is not an experiment "
                f"under experiments.{suggestion} Defined experiments: {', '.join(sorted(experiments))}. "
                + FIX
            )
    for index, pair in enumerate(config["comparisons"]):
        for side in ("a", "b"):
            if pair[side] not in experiments:
                suggestion = did_you_mean(pair[side], list(experiments))
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
    _check_teachers(config)
    _check_engine(config)


# Folders in results/ that are not experiments.
# How a message names one of an experiment's keys (where it is in the config, and which key).
KeyName = Callable[[str], str]

RESERVED_NAMES = {"benchmarks", "comparisons", "data", "logs", "summary", SWEEPS_FOLDER}


def _check_experiment(where: str, experiment: dict, key: KeyName | None = None) -> None:
    """Conflicts between one experiment's keys (an experiment, or a sweep's point). ``where``
    names the experiment; ``key(name)`` names one of its keys (default: where.name)."""
    key = key or (lambda name: f"{where}.{name}")
    _check_model_fits(experiment, key)
    unlabelled = _check_image_counts(where, experiment, key)
    _check_semi_supervised(experiment, unlabelled, key)
    weights = experiment["weights"]
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


def _check_image_counts(where: str, experiment: dict, key: KeyName) -> int:
    """The labelled, unlabelled and held-out images fit in the training set without overlap;
    returns how many images go without labels."""
    held_out = experiment["validation_images"]
    unlabelled = experiment["unlabelled_images"] if experiment["train_subset"] else 0
    if unlabelled == "all":
        unlabelled = TRAINING_IMAGES - experiment["train_subset"] - held_out
    if held_out and experiment["train_subset"] + held_out > TRAINING_IMAGES:
        raise UserError(
            f"Config error: {where} trains on the first {experiment['train_subset']} images and "
            f"holds out the last {held_out} for validation, which would overlap (there are "
            f"{TRAINING_IMAGES:,} training images). Make train_subset + validation_images at "
            f"most {TRAINING_IMAGES}."
        )
    if experiment["unlabelled_images"] and not experiment["train_subset"]:
        raise UserError(
            f"Config error: {key('unlabelled_images')} = {experiment['unlabelled_images']}, but train_subset is 0 (every "
            "training image labelled), so no image is left to use without its label. Set "
            "train_subset to the number of labelled images (e.g. 500)."
        )
    if experiment["unlabelled_images"] == "all" and experiment["train_subset"] and unlabelled < 1:
        raise UserError(
            f"Config error: {key('unlabelled_images')} = all, but the first "
            f"{experiment['train_subset']} images are labelled and the last {held_out} held out, "
            f"which leaves none of the {TRAINING_IMAGES:,} training images to use without its "
            "label: the run would not be semi-supervised at all. Make train_subset (plus "
            "validation_images) smaller, or remove unlabelled_images."
        )
    if unlabelled and experiment["train_subset"] + unlabelled + held_out > TRAINING_IMAGES:
        raise UserError(
            f"Config error: {where} uses the first {experiment['train_subset']} images with their "
            f"labels, the next {unlabelled} without, and holds out the last {held_out}: more than "
            f"the {TRAINING_IMAGES:,} training images. Make train_subset + unlabelled_images + "
            f"validation_images at most {TRAINING_IMAGES}."
        )
    return unlabelled


def _check_semi_supervised(experiment: dict, unlabelled: int, key: KeyName) -> None:
    """FixMatch's keys and the moving average's ask for each other."""
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
    if experiment["pseudo_label_thresholds"] != "fixed" and not unlabelled:
        raise UserError(
            f"Config error: {key('pseudo_label_thresholds')} = "
            f'"{experiment["pseudo_label_thresholds"]}" sets the thresholds of the unlabelled '
            "images' pseudo-labels, but this experiment has none (unlabelled_images "
            f"{experiment['unlabelled_images']}, train_subset {experiment['train_subset']}). Set "
            "train_subset and unlabelled_images (e.g. all), or remove pseudo_label_thresholds."
        )
    if experiment["teacher"] and not unlabelled:
        raise UserError(
            f'Config error: {key("teacher")} = "{experiment["teacher"]}" labels the images '
            "this experiment uses without their labels, but it has none (unlabelled_images "
            f"{experiment['unlabelled_images']}, train_subset {experiment['train_subset']}). "
            "Set train_subset and unlabelled_images (e.g. all), or remove teacher."
        )
    teacher_keys = {"teacher_keep": 1.0, "teacher_hard": False, "labelled_repeat": 1}
    chosen = [name for name, default in teacher_keys.items() if experiment[name] != default]
    if chosen and not experiment["teacher"]:
        raise UserError(
            f"Config error: {key(chosen[0])} = {experiment[chosen[0]]} shapes what a teacher's "
            "model teaches (self-training), but this experiment has no teacher. Set teacher to "
            f"the experiment whose model labels the unlabelled images, or remove {chosen[0]}."
        )
    if experiment["ema_warmup"] and not experiment["ema_decay"]:
        raise UserError(
            f"Config error: {key('ema_warmup')} ramps up the moving average's decay, but "
            "ema_decay is 0 (no moving average). Set ema_decay (e.g. 0.99), or remove ema_warmup."
        )


def _check_teachers(config: dict) -> None:
    """Self-training: each teacher is an experiment of this config, trained on the same labelled
    images (never on labels the student goes without), with the student's seeds, and no chain
    of teachers comes back to where it started."""
    experiments = config["experiments"]
    students = [(f"experiments.{name}", name, settings) for name, settings in experiments.items()]
    students += [
        (where, where, settings)
        for where, settings in _planned_runs(config)
        if where.startswith("sweeps.")
    ]
    for where, name, student in students:
        teacher = student["teacher"]
        if not teacher:
            continue
        if teacher not in experiments:
            raise UserError(
                f"Config error: {where}.teacher names '{teacher}', which is not an experiment "
                f"under experiments.{did_you_mean(teacher, list(experiments))} The teacher's "
                "model (the same seed's) labels the unlabelled images, so it must be an "
                "experiment of this config. " + FIX
            )
        _check_teacher_fits(where, student, teacher, experiments[teacher])
        chain, current = [name], teacher
        while current:
            if current in chain:
                raise UserError(
                    f"Config error: the teachers of {where} come back round: "
                    f"{' -> '.join([*chain, current])}. Each round's teacher must be trained "
                    "before its student; end the chain at an experiment without a teacher. " + FIX
                )
            chain.append(current)
            current = experiments[current]["teacher"] if current in experiments else ""


def _check_teacher_fits(where: str, student: dict, name: str, teacher: dict) -> None:
    for setting in ("train_subset", "validation_images"):
        if teacher[setting] != student[setting]:
            raise UserError(
                f"Config error: {where} learns from teacher {name}, which has {setting} "
                f"{teacher[setting]} where the student has {student[setting]}: a teacher must "
                "be trained on the same labelled images (a teacher that read more labels would "
                f"hand them to the student through its predictions). Give both the same {setting}."
            )
    seeds = student["seeds"] or [student["seed"]]  # seeds: null is the one seed
    teacher_seeds = teacher["seeds"] or [teacher["seed"]]
    missing = sorted(set(seeds) - set(teacher_seeds))
    if missing:
        raise UserError(
            f"Config error: {where} trains seeds {seeds}, and each seed learns from the "
            f"teacher {name}'s model of the same seed, but {name} has no seed "
            f"{', '.join(map(str, missing))} (its seeds: {teacher_seeds}). Add them to "
            f"{name}'s seeds, or train the student on fewer."
        )


def _check_model_fits(experiment: dict, key: KeyName) -> None:
    """The experiment asks its model only for what the model's registry entry says it has."""
    model, weights = experiment["model"], experiment["weights"]
    entry = choices.model(model)

    def refuse(setting: str, value: object, what: str, capability: str) -> None:
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


def graph_unsupported(optimizer: str, lr_schedule: str) -> str | None:
    """Why a recipe's step cannot be one CUDA graph, or None when it can: the optimizer's and the
    schedule's registry entries say (``capturable``, ``graph_safe``, through the catalog)."""
    for kind, name, flag, why in (
        ("optimizer", optimizer, "capturable", "has no capturable implementation here"),
        ("lr_schedule", lr_schedule, "graph_safe", "changes more than the learning rate each step"),
    ):
        entries = choices.catalog()[kind]
        if not entries[name][flag]:
            able = ", ".join(other for other, entry in entries.items() if entry[flag])
            return f"{kind} {name} {why} (graphs support {able})"
    return None


def _planned_runs(config: dict) -> list[tuple[str, dict]]:
    """(where, settings) of every run this config trains: run_experiments and run_sweeps' points
    (a job's own config names its one run there)."""
    runs = [
        (f"experiments.{name}", config["experiments"][name]) for name in config["run_experiments"]
    ]
    for name in config["run_sweeps"]:
        for point in sweep_points(name, config["sweeps"][name]):
            runs.append((f"sweeps.{name}, point {point.folder}", point_settings(config, point)))
    return runs


def _engine_conflict(engine: dict, experiment: dict) -> str | None:
    """What in ``engine`` one run's training would refuse, or None."""
    if engine["cuda_graph"] is True:
        graph = "engine.cuda_graph is true (every full training step one CUDA graph), but"
        if not engine["device"].startswith("cuda"):
            return (
                f"{graph} engine.device is {engine['device']}, so the run may train on a CPU (auto "
                "falls back to one where no GPU is found). Set engine.device: cuda, or "
                "cuda_graph: auto (graphs wherever they work)"
            )
        if engine["compile"] is True:
            return (
                f"{graph} engine.compile is true too (torch.compile's reduce-overhead mode makes "
                "graphs of its own). Set one of them to auto"
            )
        blocker = graph_unsupported(experiment["optimizer"], experiment["lr_schedule"])
        if blocker:
            return f"{graph} {blocker}. Set cuda_graph: auto (graphs wherever they work)"
    if engine["data_pipeline"] == "dataloader":
        pipeline = "engine.data_pipeline is dataloader (the chapter's DataLoader), which"
        if experiment["steps_per_epoch"]:
            return (
                f"{pipeline} draws no fixed number of steps, but steps_per_epoch is "
                f"{experiment['steps_per_epoch']}. Set data_pipeline: device, or remove "
                "steps_per_epoch"
            )
        if experiment["unlabelled_images"] and experiment["train_subset"]:
            return (
                f"{pipeline} draws no unlabelled images, but unlabelled_images is "
                f"{experiment['unlabelled_images']}. Set data_pipeline: device, or remove "
                "unlabelled_images"
            )
    return None


def _check_engine(config: dict) -> None:
    """The engine's settings fit every run this config trains. A job would refuse them too, but
    only after Snakemake had removed that run's finished outputs to make room for the new ones."""
    for where, experiment in _planned_runs(config):
        conflict = _engine_conflict(config["engine"], experiment)
        if conflict:
            raise UserError(f"Config error: {where}: {conflict}. " + FIX)


# Bounds on work: a config that expands past these is a mistake (or an attack), not a study.
MAX_POINTS = 1000  # a sweep's grid points (each trains every seed)
MAX_NAME_BYTES = 255  # a file name on every common file system


def _check_bounds(where: str, sweep: dict) -> None:
    """The grid's size before it is expanded, and each point folder's name length."""
    points = 1
    for values in sweep["grid"].values():
        points *= len(values)
    if points > MAX_POINTS:
        raise UserError(
            f"Config error: {where}.grid makes {points:,} points (the product of its lists' "
            f"lengths), more than the {MAX_POINTS:,} a sweep may have: every point trains every "
            "seed. Sweep fewer values, or split it into sweeps of their own. " + FIX
        )
    for key, values in sweep["grid"].items():
        for value in values:
            name = f"{key}={format_value(value)}"
            if len(name.encode()) > MAX_NAME_BYTES:
                raise UserError(
                    f"Config error: {where}.grid.{key} has a value whose folder name "
                    f"({name[:40]}...) is {len(name.encode())} bytes, more than the "
                    f"{MAX_NAME_BYTES} a file system allows in a name. Give a shorter value. " + FIX
                )


def _check_sweeps(config: dict) -> None:
    """Every sweep names an experiment, sweeps keys an experiment has, and gives each key values
    that key accepts (checked with the experiment schema, as in an experiment); its points have
    distinct folder names. run_sweeps names sweeps."""
    experiments = config["experiments"]
    validator = Validator(schema_at("experiments.*"))
    for name, sweep in config["sweeps"].items():
        where = f"sweeps.{name}"
        base = sweep["experiment"]
        if base not in experiments:
            suggestion = did_you_mean(base, list(experiments))
            raise UserError(
                f"Config error: {where}.experiment names '{base}', which is not an experiment "
                f"under experiments.{suggestion} Defined experiments: "
                f"{', '.join(sorted(experiments))}. " + FIX
            )
        _check_bounds(where, sweep)
        _check_grid(where, sweep, experiments[base], validator)
        _check_point_folders(where, sweep_points(name, sweep))
        for point in sweep_points(name, sweep):
            here = f"{where}, point {point.folder}"
            _check_experiment(
                f"{here},", point_settings(config, point), key=lambda key: f"{key} ({here})"
            )
    for name in config["run_sweeps"]:
        if name not in config["sweeps"]:
            suggestion = did_you_mean(name, list(config["sweeps"]))
            defined = ", ".join(sorted(config["sweeps"])) or "none"
            raise UserError(
                f"Config error: run_sweeps names '{name}', which is not a sweep under "
                f"sweeps.{suggestion} Defined sweeps: {defined}. " + FIX
            )


def _check_grid(
    where: str, sweep: dict, experiment: dict, validator: jsonschema.protocols.Validator
) -> None:
    """A grid sweeps keys an experiment has and a sweep may set, each value one the key takes."""
    base = sweep["experiment"]
    known = sorted(cast(dict, validator.schema)["properties"])
    for key, values in sweep["grid"].items():
        if key in NOT_SWEPT:
            raise UserError(
                f"Config error: {where}.grid sweeps '{key}', which a sweep does not set: "
                f"{NOT_SWEPT[key]}. " + FIX
            )
        if key not in known:
            suggestion = did_you_mean(key, known)
            raise UserError(
                f"Config error: {where}.grid sweeps '{key}', which is not an experiment key."
                f"{suggestion} Experiment keys: {', '.join(known)}. " + FIX
            )
        for index, value in enumerate(values):
            trial = dict(experiment, **{key: value})
            error = jsonschema.exceptions.best_match(validator.iter_errors(trial))
            if error is not None:
                raise UserError(
                    describe_error(error, where=f"{where}.grid.{key}[{index}]")
                    + f" (Every value in a grid is checked as experiments.{base}.{key} would be.) "
                    + FIX
                )


def _check_point_folders(where: str, points: list) -> None:
    """The points of a sweep have distinct folder names."""
    folders: dict[str, dict] = {}
    for point in points:
        if point.folder in folders:
            raise UserError(
                f"Config error: {where}.grid gives two points the same folder name "
                f"'{point.folder}': {json.dumps(folders[point.folder])} and "
                f"{json.dumps(point.values)}. A value is listed twice, or two values differ "
                "only in characters a folder name cannot hold. List each value once. " + FIX
            )
        folders[point.folder] = point.values
