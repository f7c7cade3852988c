"""A fuzzer, not a longer list: Hypothesis starts from the valid config.yaml and mutates it — a
value replaced by another type, a whole-number float, text with trailing or embedded whitespace
and control characters, Unicode, huge and tiny numbers, NaN, nesting; a key removed; an unknown
key added — and holds, for every mutation, what a user of the workflow is owed: validation either
accepts it, and then the runs Snakemake would plan have folder names a file system takes, or it
answers with one paragraph (a UserError), never another exception, within a time bound. Two
more properties: the same mutations, as a config file, through a real Snakemake dry run; and
whatever engine and run choices validation accepts, a training job's own decisions accept (so
no job refuses, after Snakemake has removed its finished outputs, what the config let through).

`make test` runs a bounded number of examples of each; `make fuzz` many more. What they found is
kept as plain regression tests in test_config.py (the trailing newline, whole-number floats,
bounds on work, the engine settings a run refuses)."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, assert_no_traceback, flat, snakemake
from fashion_cnn.config import choices
from fashion_cnn.config.settings import EngineSettings, ExperimentSettings
from fashion_cnn.config.sweeps import all_runs
from fashion_cnn.config.validation import merge, read_config_file, validate_config
from fashion_cnn.core.errors import UserError
from fashion_cnn.training.device import Switches
from fashion_cnn.training.methods import Pipeline, training_method
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from snakemake.utils import update_config

settings.register_profile(
    "ci", max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")), deadline=2000
)
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))

BASE = read_config_file(REPO / "config.yaml")


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every place in the config a value sits (the containers too)."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


PATHS = _paths(BASE)
CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(max_size=20).map(lambda text: text + "\n"),
    st.text(max_size=20).map(lambda text: " " + text + " "),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=10), CONTROL, st.text(max_size=10)),
    st.sampled_from(["cpu\n", "auto ", "cnn_baseline\n", "../..", "/", "{x}", "$(id)", "a,b=c"]),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-100, max_value=10_000).map(float),  # whole-number floats
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-300, max_value=1e-300),
)
SCALARS = st.one_of(TEXT, NUMBERS, st.booleans(), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _set(config: dict, path: tuple, value: Any) -> None:
    node: Any = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _remove(config: dict, path: tuple) -> None:
    node: Any = config
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        del node[path[-1]]
    else:
        node.pop(path[-1])


MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), VALUES),
    st.tuples(st.just("remove"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("add"), st.sampled_from([(), *PATHS]), st.tuples(TEXT, VALUES)),
)


def _mutate(config: dict, mutation: tuple) -> None:
    kind, path, value = mutation
    if kind == "set":
        _set(config, path, value)
    elif kind == "remove":
        _remove(config, path)
    else:
        node: Any = config
        for part in path:
            node = node[part]
        if isinstance(node, dict):
            node[value[0]] = value[1]


@given(st.lists(MUTATIONS, min_size=1, max_size=3))
def test_a_mutated_config_is_accepted_whole_or_refused_in_one_paragraph(mutations):
    config = copy.deepcopy(BASE)
    for mutation in mutations:
        try:
            _mutate(config, mutation)
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or replaced that place
    try:
        validated = validate_config(config)
    except UserError as error:
        paragraph = error.paragraph()
        assert paragraph.strip() and "\n\n" not in paragraph
        assert "Traceback" not in paragraph
        return
    # accepted: what Snakemake would plan from it has folder names a file system takes
    for name in all_runs(validated):
        for part in name.split("/"):
            assert part and len(part.encode()) <= 255, name
            assert not any(ord(character) < 0x20 for character in part), name
    for key in ("results", "resources"):
        assert not any(ord(character) < 0x20 for character in validated[key])


# What a training job decides from its settings alone, before it reads data or trains.
ENGINE_CHOICES = {
    "device": ["auto", "cpu", "cuda", "cuda:0"],
    "data_pipeline": ["device", "dataloader"],
    "cuda_graph": ["auto", True, False],
    "compile": ["auto", True, False],
    "precision": ["auto", "fp32", "bf16"],
    "channels_last": ["auto", True, False],
}
RUN_CHOICES = {
    "optimizer": choices.names("optimizer"),
    "lr_schedule": choices.names("lr_schedule"),
    "steps_per_epoch": [0, 5],
    "train_subset": [0, 500],
    "unlabelled_images": [0, 300, "all"],
}


@settings(max_examples=int(os.environ.get("FUZZ_JOB_EXAMPLES", "150")))
@given(
    st.fixed_dictionaries({key: st.sampled_from(values) for key, values in ENGINE_CHOICES.items()}),
    st.fixed_dictionaries({key: st.sampled_from(values) for key, values in RUN_CHOICES.items()}),
)
def test_what_the_config_accepts_a_training_job_accepts(engine, run):
    """Whatever a config that validates asks of the engine and a run, the training job's own
    decisions (the engine's switches, the method and its batches) accept too: a job that refused
    it would do so only after Snakemake had removed that run's finished outputs (issue 31,
    class 3). A CUDA device is given as itself, without a GPU here: the switches only name it."""
    config = copy.deepcopy(BASE)
    config["engine"].update(engine)
    config["experiments"]["cnn_baseline"].update(run)
    config["run_experiments"], config["comparisons"], config["run_sweeps"] = (
        ["cnn_baseline"],
        [],
        [],
    )
    try:
        validated = validate_config(config)
    except UserError:
        return
    experiment = ExperimentSettings.from_dict(validated["experiments"]["cnn_baseline"])
    engine_settings = EngineSettings.from_dict(validated["engine"])
    device = torch.device("cpu" if engine["device"] in ("auto", "cpu") else engine["device"])
    training = experiment.training
    switches = Switches.resolve(
        engine_settings, device, training.precision, training.optimizer, training.lr_schedule
    )
    images = np.zeros((64, 28, 28), dtype=np.uint8)
    labels = np.arange(64, dtype=np.int64) % 10
    unlabelled = images if experiment.unlabelled_count() else images[:0]
    pipeline = Pipeline(torch.device("cpu"), engine_settings.data_pipeline, switches.channels_last)
    training_method(experiment).batches(images, labels, unlabelled, pipeline)


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("FUZZ_DRY_RUNS", "6")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking: minutes of Snakemake runs
)
@given(st.lists(MUTATIONS.filter(lambda mutation: mutation[0] != "remove"), min_size=1, max_size=2))
def test_a_mutated_config_file_plans_a_dry_run_or_stops_snakemake_in_one_paragraph(mutations):
    """The same mutations through the real Snakemake, as a --configfile over config.yaml (so
    removals are left out: a file can only add and replace): what validation accepts, a dry run
    plans; what it refuses stops Snakemake with that paragraph, no traceback, within a minute.
    A few examples in `make test` (each is a Snakemake run); `make fuzz` runs more."""
    config = copy.deepcopy(BASE)
    for mutation in mutations:
        try:
            _mutate(config, mutation)
        except (KeyError, IndexError, TypeError):
            return
    with tempfile.TemporaryDirectory() as folder:
        mutated = Path(folder) / "mutated.yaml"
        mutated.write_text(yaml.safe_dump(config, sort_keys=False))
        merged = copy.deepcopy(BASE)
        update_config(merged, read_config_file(mutated))  # as Snakemake reads a --configfile
        try:
            validate_config(merged)
            refusal = None
        except UserError as error:
            refusal = " ".join(error.paragraph().split())
        result = snakemake(Path(folder), "-n", "--cores", "1", configfiles=[mutated], timeout=60)
        output = flat(result.stdout + result.stderr)
        assert_no_traceback(result.stdout + result.stderr)
        if refusal is None:
            assert result.returncode == 0 and "Job stats" in output, output[-2000:]
        else:
            assert result.returncode != 0 and refusal[:80] in output, (refusal, output[-2000:])
            assert not (Path(folder) / "results").exists()


NESTED = st.recursive(
    st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
    lambda inner: st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from("abc"), NESTED, max_size=3),
    st.dictionaries(st.sampled_from("abc"), NESTED, max_size=3),
)
@example({"a": [1, 2]}, {"a": {}})  # what the dry-run property found (run_experiments: {})
@example({"a": [1, 2]}, {"a": {"b": 1}})
@example({}, {"a": {}})
def test_config_files_merge_as_snakemake_merges_them(base, override):
    """`check-config --configfile a.yaml b.yaml` (and `make run`, which runs it first) reads what
    `snakemake --configfile a.yaml b.yaml` reads. Found by the dry-run property: an empty mapping
    over a list (`run_experiments: {}`) is no change to Snakemake and was a replacement here."""
    expected = copy.deepcopy(base)
    update_config(expected, copy.deepcopy(override))
    assert merge(base, override) == expected
