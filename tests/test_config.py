"""Config validation: every mistake is named in one paragraph, before any job starts."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_no_traceback, base_config, cli, flat, snakemake
from fashion_cnn.config.schema import load_schema
from fashion_cnn.config.validation import read_config_file, validate_config
from fashion_cnn.core.errors import UserError


def _raw():
    return read_config_file(REPO / "config.yaml")


def _error(config) -> str:
    with pytest.raises(UserError) as caught:
        validate_config(config)
    return " ".join(caught.value.paragraph().split())


def test_default_config_is_valid_and_defaults_are_filled():
    config = base_config()
    assert config["engine"]["device"] == "auto"
    baseline = config["experiments"]["cnn_baseline"]
    # keys not written in config.yaml come from the schema's defaults
    assert baseline["augmentation"] == "none"
    assert baseline["train_subset"] == 0
    assert config["experiments"]["cnn_small_augmented"]["train_subset"] == 500


def test_every_optional_schema_key_has_type_description_and_default():
    schema = load_schema()

    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{where}.{key} has no description"
            if key not in node.get("required", []):
                assert "default" in sub, f"{where}.{key} has no default"
            assert "type" in sub or "enum" in sub, f"{where}.{key} has no type"
            walk(sub, f"{where}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{where}.*")

    walk(schema, "config")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["experiments"]["cnn_baseline"].update(epoch=3), "unknown key 'epoch'"),
        (lambda c: c["experiments"]["cnn_baseline"].update(epochs="ten"), "wrong type"),
        (lambda c: c["experiments"]["cnn_baseline"].update(epochs=0), "out of range"),
        (lambda c: c["experiments"]["cnn_baseline"].update(learning_rate=-1), "greater than 0"),
        (lambda c: c["experiments"]["cnn_baseline"].update(augmentation="mixup"), "choose one of"),
        (lambda c: c["experiments"]["cnn_baseline"].update(model="vgg"), "choose one of"),
        (lambda c: c["engine"].update(device="gpu"), "engine.device"),
        (lambda c: c["data"].update(mirrors=["ftp://example.org/"]), "wrong form"),
        (lambda c: c.update(run_experiments=["cnn_basline"]), "Did you mean 'cnn_baseline'"),
        (lambda c: c.update(experiments={"Bad-Name": {}}), "experiment name"),
        (lambda c: c.update(colour="red"), "unknown key 'colour'"),
        (
            lambda c: c["experiments"]["cnn_baseline"].update(learning_rate=float("nan")),
            "experiments.cnn_baseline.learning_rate = nan is not a finite number",
        ),
        (
            lambda c: c["experiments"]["cnn_fast"].update(weight_decay=float("inf")),
            "weight_decay = inf is not a finite number",
        ),
        (
            lambda c: c["experiments"]["cnn_fast"].update(label_smoothing=float("nan")),
            "label_smoothing = nan is not a finite number",
        ),
        (lambda c: c["data"].update(timeout_s=float("inf")), "data.timeout_s = inf is not a"),
        (
            lambda c: c["export"].update(parity_tolerance=float("nan")),
            "export.parity_tolerance = nan is not a finite number",
        ),
        (lambda c: c["experiments"]["cnn_baseline"].update(learning_rate=1.0e6), "at most 10"),
        (lambda c: c["experiments"]["cnn_baseline"].update(seed=2**70), "at most 4294967295"),
        (lambda c: c["experiments"]["cnn_baseline"].update(batch_size=10**9), "at most 65536"),
        (lambda c: c["data"].update(timeout_s=10**9), "at most 3600"),
        (lambda c: c.update(results=""), "results is empty"),
        (lambda c: c.update(resources=""), "resources is empty"),
        (lambda c: c.update(results="/"), "the root of the file system"),
        (lambda c: c.update(results="out/{run}"), 'results = "out/{run}" has the wrong form'),
        (lambda c: c.update(results="out\nx"), "has the wrong form"),
        (
            lambda c: c["experiments"]["cnn_baseline"].update(learning_rate="1e-3"),
            "YAML reads 1e-3 as text because the number has no decimal point: write 1.0e-3",
        ),
        (
            lambda c: c.update(comparisons=[{"a": "cnn_small_augmnted", "b": "cnn_small_plain"}]),
            "comparisons.0.a names 'cnn_small_augmnted'",
        ),
        (
            lambda c: c.update(comparisons=[{"a": "cnn_baseline", "b": "cnn_baseline"}]),
            "compares cnn_baseline with itself",
        ),
    ],
    ids=[
        "unknown key",
        "wrong type",
        "out of range",
        "not positive",
        "unknown augmentation preset",
        "unknown model",
        "bad device",
        "bad mirror scheme",
        "unknown experiment to run",
        "bad experiment name",
        "unknown top-level key",
        "NaN learning rate",
        "infinite weight decay",
        "NaN label smoothing",
        "infinite timeout",
        "NaN tolerance",
        "absurd learning rate",
        "seed too large for the generators",
        "absurd batch size",
        "absurd timeout",
        "empty results folder",
        "empty resources folder",
        "results at the file-system root",
        "braces in the results folder",
        "control character in the results folder",
        "1e-3 read as text",
        "unknown experiment in a comparison",
        "an experiment compared with itself",
    ],
)
def test_bad_values_are_named_with_what_is_allowed(change, expected):
    config = _raw()
    change(config)
    message = _error(config)
    assert expected in message
    assert "Fix it in config.yaml" in message


def test_unknown_key_suggests_the_close_one():
    config = _raw()
    config["experiments"]["cnn_baseline"]["batchsize"] = 32
    message = _error(config)
    assert "Did you mean 'batch_size'" in message


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        ({"model": "cnn", "weights": "imagenet"}, "ImageNet weights (resnet18, vit_b16)"),
        ({"model": "resnet18", "weights": "none", "conv1_init": "mean_rgb"}, "conv1_init"),
        ({"model": "cnn", "weights": "no/such/file.pth"}, "no such file exists"),
        ({"model": "cnn", "output_softmax": True, "label_smoothing": 0.1}, "Use one"),
        ({"model": "resnet18", "dropout": 0.5}, "model resnet18 has no dropout here"),
        ({"model": "vit_small", "dropout_place": "features"}, "is an option of cnn, cnn_bn"),
        ({"model": "vit_small", "width": 30}, "must be a multiple of 4"),
        ({"train_subset": 50000, "validation_images": 20000}, "would overlap"),
    ],
    ids=[
        "imagenet without a pretrained model",
        "mean_rgb without weights",
        "missing weights file",
        "softmax with smoothing",
        "dropout on resnet18",
        "dropout place on a vit",
        "vit width not split among heads",
        "validation overlapping the training subset",
    ],
)
def test_conflicting_options_are_caught(experiment, expected):
    config = _raw()
    config["experiments"] = {"broken": experiment}
    config["run_experiments"] = ["broken"]
    config["comparisons"] = []
    assert expected in _error(config)


ENGINE_CONFLICTS = [  # engine, the run, a change to it, what the paragraph names
    ({"cuda_graph": True, "device": "auto"}, "cnn_baseline", {}, "engine.device is auto"),
    ({"cuda_graph": True, "device": "cpu"}, "cnn_baseline", {}, "engine.device is cpu"),
    ({"cuda_graph": True, "device": "cuda", "compile": True}, "cnn_baseline", {}, "compile is"),
    ({"cuda_graph": True, "device": "cuda"}, "cnn_frontier", {}, "lr_schedule onecycle"),
    ({"cuda_graph": True, "device": "cuda:0"}, "cnn_baseline", {"optimizer": "sgd"}, "sgd"),
    ({"data_pipeline": "dataloader"}, "cnn_500_fixmatch", {}, "steps_per_epoch is 8"),
    (
        {"data_pipeline": "dataloader"},
        "cnn_500_fixmatch",
        {"steps_per_epoch": 0},
        "unlabelled_images is all",
    ),
]


@pytest.mark.parametrize(
    ("engine", "experiment", "changes", "expected"),
    ENGINE_CONFLICTS,
    ids=[f"{'+'.join(map(str, e.values()))} for {x}{c or ''}" for e, x, c, _ in ENGINE_CONFLICTS],
)
def test_an_engine_setting_a_run_would_refuse_is_refused_with_the_config(
    engine, experiment, changes, expected
):
    """Before any job: a training job refuses these too, but only after Snakemake has removed
    the run's finished outputs to make room for new ones (issue 31, class 3). Only the runs
    the config trains are held to it."""
    config = _raw()
    config["engine"].update(engine)
    config["experiments"][experiment].update(changes)
    config["run_experiments"], config["comparisons"] = [experiment], []
    message = _error(config)
    assert f"experiments.{experiment}:" in message and expected in message, message
    if experiment != "cnn_baseline":  # a conflict with that run alone: not refused unplanned
        config["run_experiments"] = ["cnn_baseline_softmax"]
        validate_config(config)


def test_an_engine_conflict_in_a_planned_sweep_point_names_the_point():
    config = _raw()
    config["engine"]["data_pipeline"] = "dataloader"
    config["sweeps"]["steps"] = {"experiment": "cnn_baseline", "grid": {"steps_per_epoch": [0, 50]}}
    config["run_experiments"], config["comparisons"] = ["cnn_baseline_softmax"], []
    config["run_sweeps"] = ["steps"]
    message = _error(config)
    assert "sweeps.steps, point steps_per_epoch=50" in message, message


@pytest.mark.slow
def test_command_line_refuses_bad_json_without_traceback():
    result = cli("check-config", "--config-json", "{not json")
    assert result.returncode == 2
    assert "not valid JSON" in flat(result.stderr)
    assert_no_traceback(result.stderr)


@pytest.mark.slow
def test_command_line_names_yaml_syntax_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments:\n  a: {model: cnn\n")
    result = cli("check-config", "--configfile", broken)
    assert result.returncode == 2
    assert "not valid YAML" in flat(result.stderr)
    assert_no_traceback(result.stderr)


@pytest.mark.slow
def test_snakemake_stops_before_any_job_with_one_paragraph(tmp_path):
    bad = tmp_path / "bad.yaml"
    config = {"experiments": {"cnn_baseline": {"epochs": -1}}}
    bad.write_text(json.dumps(config))
    result = snakemake(tmp_path, "-n", configfiles=[bad], timeout=120)
    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert "experiments.cnn_baseline.epochs = -1 is out of range" in output
    assert_no_traceback(output)
    assert not (tmp_path / "results").exists()


def test_experiment_settings_hold_only_that_experiment():
    from fashion_cnn.config.validation import experiment_settings

    config = base_config()
    settings = json.loads(experiment_settings(config, "cnn_small_plain"))
    assert list(settings["experiments"]) == ["cnn_small_plain"]
    # only what differs from the schema's defaults, so a new option does not rerun old results
    assert "label_smoothing" not in settings["experiments"]["cnn_small_plain"]
    assert settings["experiments"]["cnn_small_plain"]["train_subset"] == 500
    # the command line fills the defaults back in: the same experiment as Snakemake's
    restored = validate_config(copy.deepcopy(settings))
    assert restored["experiments"]["cnn_small_plain"] == config["experiments"]["cnn_small_plain"]
    assert restored["engine"] == config["engine"] and restored["export"] == config["export"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "experiments:\n  cnn_baseline: {learning_rate: .nan}\n",
            "experiments.cnn_baseline.learning_rate = nan is not a finite number",
        ),
        (
            "experiments:\n  cnn_baseline: {learning_rate: 3e-4}\n",
            "write 3.0e-4",
        ),
        ('results: ""\n', "results is empty"),
    ],
    ids=["NaN", "1e-3 as text", "empty results"],
)
def test_snakemake_names_non_finite_and_yaml_text_numbers(tmp_path, text, expected):
    """The same checks reach a user who runs snakemake with a YAML file (not only the CLI)."""
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    result = snakemake(tmp_path, "-n", configfiles=[extra], timeout=120)
    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert expected in output
    assert_no_traceback(output)


def test_check_config_names_the_file_with_a_yaml_syntax_error(tmp_path):
    """Snakemake's own parser says only 'Config file is not valid JSON or YAML' for a file given
    with --configfile (it reads it before any workflow code runs). `make run` checks the files
    with check-config first, which names the file and the line."""
    broken = tmp_path / "extra.yaml"
    broken.write_text("experiments:\n  cnn_baseline:\n    epochs: [3\n")
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            REPO,
            "check-config",
            f"VENV={Path(sys.prefix)}",
            # the environment running the tests is set up: never reinstall it from REPO (from a
            # second checkout that would re-point its editable install there)
            "-o",
            str(Path(sys.prefix) / ".installed"),
            f"SNAKEMAKE_ARGS=--cores 2 --configfile config.yaml {broken} --dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert f"Config file {broken} is not valid YAML near line" in output
    assert_no_traceback(output)


@pytest.mark.parametrize(
    "files",
    [
        ["config/quick.yaml"],
        ["config/replicates.yaml"],
        ["config/compare/device.yaml"],
        ["config/compare/device.yaml", "config/compare/dataloader.yaml"],
    ],
    ids=lambda files: "+".join(Path(name).stem for name in files),
)
def test_every_preset_is_valid_after_config_yaml(files):
    """The presets under config/ are loaded after config.yaml, as their comments say."""
    from fashion_cnn.config.validation import load_config

    presets = [p for p in (REPO / "config").rglob("*.yaml") if p != REPO / "config" / "config.yaml"]
    assert sorted(str(p.relative_to(REPO)) for p in presets) == sorted(
        [
            "config/quick.yaml",
            "config/replicates.yaml",
            "config/compare/device.yaml",
            "config/compare/dataloader.yaml",
        ]
    ), "a new preset: add it here"
    config = load_config([str(REPO / "config.yaml"), *(str(REPO / name) for name in files)], [])
    for name in config["run_experiments"]:
        assert config["experiments"][name]["seeds"], name


def _patterns(node, path="") -> list[tuple[str, str]]:
    """(where, pattern) of every `pattern` in a schema."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.append((path, node["pattern"]))
        for key, value in node.items():
            found += _patterns(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _patterns(value, f"{path}/{index}")
    return found


SCHEMAS = [
    REPO / "workflow" / "schemas" / name for name in ("config.schema.yaml", "record.schema.yaml")
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[path.name for path in SCHEMAS])
def test_every_pattern_is_anchored_and_holds_for_the_whole_value(schema):
    """jsonschema's `pattern` searches, and `$` also matches before a final newline: "cpu\\n"
    passed ^(auto|cpu)$. Every pattern is written anchored, and the project's validator matches
    it against the whole value, so no value with a trailing line break passes one."""
    import yaml  # here: only this test reads the raw schema files
    from fashion_cnn.config.schema import Validator

    patterns = _patterns(yaml.safe_load(schema.read_text()))
    assert patterns
    unanchored = [
        (where, p) for where, p in patterns if not (p.startswith("^") and p.endswith("$"))
    ]
    assert unanchored == []
    for where, pattern in patterns:
        assert not Validator({"type": "string", "pattern": pattern}).is_valid("x" * 3 + "\n"), where


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["engine"].update(device="cpu\n"), "It ends in a line break or space"),
        (lambda c: c.update(results="out\n"), 'results = "out\\n" has the wrong form'),
        (lambda c: c["experiments"].update({"mine\n": {"model": "cnn"}}), "mine\\n"),
        (lambda c: c["experiments"]["cnn_baseline"].update(batch_size=32.0), "written without a decimal point: 32"),
        (lambda c: c["experiments"]["cnn_baseline"].update(seeds=[42, 43.0]), "seeds.1 = 43.0 has the wrong type"),
        (lambda c: c["experiments"]["cnn_baseline"].update(epochs=True), "epochs = true has the wrong type"),
        (lambda c: c.update(sweeps={"s": {"experiment": "cnn_baseline", "grid": {"epochs": [30, 30.0]}}}), "30.0 has the wrong type"),
    ],
    ids=["device ending in a newline", "results ending in a newline", "experiment name ending in a newline",
         "whole-number float batch", "whole-number float seed", "true as a number", "a grid's 30 and 30.0"],
)  # fmt: skip
def test_a_trailing_newline_or_a_whole_number_float_is_refused(change, expected):
    config = _raw()
    change(config)
    assert expected in _error(config)


def test_the_command_line_refuses_them_too():
    from fashion_cnn.config.schema import argument_type

    device = argument_type("engine.device")
    assert device("cuda:1") == "cuda:1"
    with pytest.raises(Exception, match="wrong form"):
        device("cpu\n")


def test_a_results_folder_that_is_a_link_loop_is_one_paragraph(tmp_path):
    """Python's resolve() raises on a link loop (ELOOP): Snakemake's config check ended in a
    stack. Now one paragraph, before any job."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    config = _raw()
    config["results"] = str(loop / "results")
    assert "a symbolic link that leads back to itself" in _error(config)


BILLION_LAUGHS = """
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_work_without_bounds_is_refused_at_once(tmp_path):
    """A few hundred bytes of nested YAML aliases (10^9 values), a file of megabytes, a grid of
    10^8 points, thousands of seeds, a point whose folder name passes the file system's limit:
    each refused with its limit named, within a second, instead of a hang."""
    import time  # here: only this test times a refusal

    from fashion_cnn.config.validation import load_config

    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    with pytest.raises(UserError, match="expands to more than 100,000 values"):
        load_config([REPO / "config.yaml", laughs], [])
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 200_000)
    with pytest.raises(UserError, match="more than the 1,000,000 a config may have"):
        read_config_file(huge)
    cases = [
        (
            lambda c: c.update(sweeps={"s": {"experiment": "cnn_baseline", "grid": {"epochs": list(range(1, 10001)), "batch_size": list(range(1, 10001))}}}),
            "makes 100,000,000 points",
        ),
        (lambda c: c["experiments"]["cnn_baseline"].update(seeds=list(range(10_000))), "seeds has 10,000 values, more than the 100 allowed"),
        (lambda c: c.update(sweeps={"s": {"experiment": "cnn_baseline", "grid": {"weights": ["w" * 300 + ".pth"]}}}), "more than the 255 a file system allows"),
    ]  # fmt: skip
    for change, expected in cases:
        config = _raw()
        change(config)
        assert expected in _error(config)
    assert time.monotonic() - started < 30


def test_fixmatch_with_no_image_left_unlabelled_is_refused_for_that_reason():
    """The right reason: `unlabelled_images: all` with every training image labelled or held
    out leaves nothing to use without labels; refused when the config is read, not blamed on
    the learning rate later."""
    config = _raw()
    config["experiments"]["cnn_500_fixmatch"].update(train_subset=55_000, validation_images=5_000)
    message = _error(config)
    assert "unlabelled_images = all" in message and "leaves none of the 60,000" in message
