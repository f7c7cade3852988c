"""A fuzzer, not a longer list: Hypothesis starts from the valid config.yaml and mutates it — a
value replaced by another type, a whole-number float, text with trailing or embedded whitespace
and control characters, Unicode, huge and tiny numbers, NaN, nesting; a key removed; an unknown
key added — and holds, for every mutation, what a user of the workflow is owed: validation either
accepts it, and then the runs Snakemake would plan have folder names a file system takes, or it
answers with one paragraph (a UserError), never another exception, within a time bound.

`make test` runs a bounded number of examples (the `ci` profile); `make fuzz` many more. What it
found is kept as plain regression tests in test_config.py (the trailing newline, whole-number
floats, bounds on work)."""

from __future__ import annotations

import copy
import os
from typing import Any

from conftest import REPO
from fashion_cnn.config.sweeps import all_runs
from fashion_cnn.config.validation import read_config_file, validate_config
from fashion_cnn.core.errors import UserError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
