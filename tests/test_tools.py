"""The measurement scripts in tools/ (the figures docs/results/notebook.md quotes come from them): each
starts from a clean environment, finds the package from its own folder, and says what it
measures with --help. Measuring itself takes minutes and a quiet machine; it is not run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = sorted((Path(__file__).resolve().parent.parent / "tools").glob("*.py"))


def test_every_tool_is_listed():
    assert [path.name for path in TOOLS] == [
        "adam_on_cpu.py",
        "allocator_faults.py",
        "chapter_listing.py",
        "chapter_script_timing.py",
        "model_throughput.py",
        "omp_wait.py",
        "pseudo_label_audit.py",
        "snakemake_lint.py",
        "test_time_views.py",
    ]


def test_the_lint_lets_through_only_the_missing_container_of_the_rules_that_need_none():
    """make lint's snakemake --lint: the rules marked `container: False` are the data's, and only
    their "no container" lint is let through; any other lint, or that lint elsewhere, is kept."""
    tool = _tool("snakemake_lint")
    assert tool.rules_without_a_container() == {"download_data", "prepare_data"}
    text = (
        "Lints for rule download_data (line 7, /x/data.smk):\n"
        "    * Specify a conda environment or container for each rule.:\n"
        "      This way, the used software ...\n"
        "Lints for rule train_model (line 4, /x/train.smk):\n"
        "    * Specify a conda environment or container for each rule.:\n"
        "    * Param settings is a prefix of input or output file but hardcoded:\n"
    )
    assert tool.lints(text) == [
        ("download_data", tool.BY_DESIGN),
        ("train_model", tool.BY_DESIGN),
        ("train_model", "Param settings is a prefix of input or output file but hardcoded"),
    ]


def _tool(name: str):
    import importlib.util  # here: tools/ is not a package; load the script as a module

    spec = importlib.util.spec_from_file_location(name, TOOLS[0].parent / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _lookup_model(images, logits):
    """A stand-in model whose logits for each image (or its mirror image) are fixed in advance;
    an image it does not know (a shifted view) gets zeros, which move no argmax."""
    import torch
    from fashion_cnn.data.augment import to_float_batch

    known_images = to_float_batch(torch.from_numpy(images)).flatten(1)

    class Lookup(torch.nn.Module):
        def forward(self, batch):
            flat, mirrored = batch.flatten(1), batch.flip(3).flatten(1)
            known = (flat[:, None] == known_images).all(2)
            known |= (mirrored[:, None] == known_images).all(2)
            return known.float() @ logits

    return Lookup()


def test_the_views_tool_scores_an_ensemble_as_the_mean_of_its_models_probabilities(arrays):
    """tools/test_time_views.py with two checkpoints: each model's accuracy per combination of
    views, then their ensemble's, the argmax of the models' mean softmax. Model A is right and
    sure on the first 200 images and wrong and unsure on the last 100; model B the other way
    round. So A scores 2/3, B 1/3 and their ensemble every image (in every combination of
    views: the stand-ins know an image and its mirror image, and shifted views move nothing)."""
    import torch

    tool = _tool("test_time_views")
    images = arrays["test_images"][:300]
    labels = arrays["test_labels"][:300].astype("int64")
    truth = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float()
    wrong = torch.nn.functional.one_hot(torch.from_numpy((labels + 1) % 10), 10).float()
    first = (torch.arange(300) < 200).float()[:, None]
    sure_a = 4 * truth * first + 1 * wrong * (1 - first)
    sure_b = 1 * wrong * first + 4 * truth * (1 - first)
    models = [(_lookup_model(images, sure_a), False), (_lookup_model(images, sure_b), False)]
    table = tool.accuracies(models, images, labels)
    assert list(table) == tool.COMBINATIONS
    for row in table.values():
        assert row == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert tool.accuracies(models[:1], images, labels)[(True, 1)] == pytest.approx([2 / 3])


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS, ids=[path.stem for path in TOOLS])
def test_the_tool_runs_from_anywhere_and_explains_itself(tool, tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(tool), "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    first_line = tool.read_text().split('"""')[1].splitlines()[0].rstrip(".")
    assert first_line[:40] in " ".join(result.stdout.split())


@pytest.mark.slow
def test_the_chapter_script_and_the_engine_are_timed_as_whole_processes(
    tmp_path, debian_mirror, prepared_data
):
    """The second baseline, small: the chapter's listing (torchvision's FashionMNIST from local
    files, its DataLoader, its loop, the test accuracy it prints each epoch) and the engine's
    training process, each timed from start to exit; the engine's model then tested."""
    report_path = tmp_path / "timing.json"
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # left out of both processes
    result = subprocess.run(
        [
            sys.executable, str(TOOLS[0].parent / "chapter_script_timing.py"),
            "--raw-folder", str(debian_mirror), "--data", str(prepared_data),
            "--epochs", "2", "--repeats", "1", "--train-images", "256", "--threads", "1",
            "--output-json", str(report_path),
        ],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    (chapter,) = report["chapter_script"]
    assert [row["epoch"] for row in chapter["epochs"]] == [1, 2]
    assert all(0 < row["test_accuracy"] <= 1 for row in chapter["epochs"])
    seconds = [row["seconds"] for row in chapter["epochs"]]
    assert 0 < seconds[0] < seconds[1] <= chapter["seconds"]
    assert 0 < report["engine_process"]["test_accuracy"] <= 1
    (engine_seconds,) = report["engine_process"]["seconds"]
    assert report["images_per_second"]["engine_process"] == [512 / engine_seconds]
    # every epoch's saved state, timed as it appeared and tested after the run
    curve = report["engine_process"]["epochs"]
    assert [row["epoch"] for row in curve] == [1, 2]
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"] <= engine_seconds
    assert curve[1]["test_accuracy"] == report["engine_process"]["test_accuracy"]
    assert report["engine_process"]["curves"] == [curve]


def _timing_tool():
    import importlib.util  # here: tools/ is not a package; load the script as a module

    spec = importlib.util.spec_from_file_location(
        "chapter_script_timing", TOOLS[0].parent / "chapter_script_timing.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.slow
def test_another_recipe_than_the_chapters_is_timed_alone_or_refused(tmp_path):
    """cnn_fast's whole process is no comparison with the chapter's script (another recipe), so
    the tool refuses to time the two together, naming the flag that times the engine alone."""
    result = subprocess.run(
        [
            sys.executable, str(TOOLS[0].parent / "chapter_script_timing.py"),
            "--raw-folder", str(tmp_path), "--data", str(tmp_path / "x.npz"),
            "--output-json", str(tmp_path / "t.json"), "--experiment", "cnn_fast",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--engine-only" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_the_engines_time_to_90_is_each_repeats_first_epoch_there():
    """The records of an engine-only timing: no whole-process comparison (the chapter's script did
    not run), and one time to 90% per repeat that got there, each its first epoch at 90% or more."""
    from fashion_cnn.results.ledger import check_record

    tool = _timing_tool()
    curves = [
        [
            {"epoch": 1, "seconds": 30.0, "test_accuracy": 0.89},
            {"epoch": 2, "seconds": 55.0, "test_accuracy": 0.905},
            {"epoch": 3, "seconds": 80.0, "test_accuracy": 0.91},
        ],
        [
            {"epoch": 1, "seconds": 28.0, "test_accuracy": 0.90},
            {"epoch": 2, "seconds": 52.0, "test_accuracy": 0.92},
            {"epoch": 3, "seconds": 76.0, "test_accuracy": 0.93},
        ],
        [{"epoch": e, "seconds": 25.0 * e, "test_accuracy": 0.8} for e in (1, 2, 3)],
    ]
    report = {
        "command": "python tools/chapter_script_timing.py --engine-only",
        "commit": "abc1234",
        "date": "2026-12-07",
        "epochs": 3,
        "engine_threads": 2,
        "engine_experiment": "cnn_fast",
        "engine_recipe": {"precision": "fp32"},
        "chapter_script": [],
        "engine_process": {
            "seconds": [81.0, 77.0, 76.0],
            "test_accuracy": 0.8,
            "epochs": curves[-1],
            "curves": curves,
        },
    }
    args = type("Args", (), {"publish": "fast_3", "cpu": "a CPU", "threads": 2})()
    (record,) = tool.records(report, args)
    assert record["name"] == "fast_3.engine_to_90"
    assert record["duration"]["seconds"] == [55.0, 28.0]
    assert "cnn_fast with precision fp32, 3 epochs" in record["title"]
    assert "Reached at epoch 2, 1, never" in record["note"]
    assert check_record(record, record["name"]) == record
    args.targets = [92, 92.5]  # --targets: one record each, a dot in the figure made a _
    first, second = tool.records(report, args)
    assert (first["name"], second["name"]) == ("fast_3.engine_to_92", "fast_3.engine_to_92_5")
    assert first["duration"]["seconds"] == [52.0] and second["duration"]["seconds"] == [76.0]
    assert "Reached at epoch never, 2, never" in first["note"]
    assert "first epoch at 92.5% test accuracy" in second["title"]
    assert check_record(second, second["name"]) == second


def test_a_timing_over_seeds_gives_each_seeds_time_and_their_last_epochs_accuracy():
    """--seeds: one repeat per seed; the time to a target names the seeds, and NAME.accuracy is
    the seeds' test accuracies after their last epoch with their mean and spread (scipy's
    interval), on the page --question names."""
    from fashion_cnn.results.ledger import check_record
    from fashion_cnn.results.stats import describe

    tool = _timing_tool()
    finals = [0.9412, 0.9398, 0.9436]
    curves = [
        [
            {"epoch": 1, "seconds": 40.0 + seed - 42, "test_accuracy": 0.93},
            {"epoch": 2, "seconds": 80.0 + seed - 42, "test_accuracy": final},
        ]
        for seed, final in zip((42, 43, 44), finals, strict=True)
    ]
    report = {
        "command": "python tools/chapter_script_timing.py --engine-only --seeds 42 43 44",
        "commit": "abc1234",
        "date": "2026-12-07",
        "epochs": 2,
        "engine_threads": 2,
        "engine_experiment": "cnn_speedrun",
        "engine_recipe": {},
        "engine_seeds": [42, 43, 44],
        "chapter_script": [],
        "engine_process": {
            "seconds": [90.0, 91.0, 92.0],
            "test_accuracy": finals[-1],
            "epochs": curves[-1],
            "curves": curves,
        },
    }
    args = type(
        "Args",
        (),
        {"publish": "run", "cpu": "a CPU", "threads": 2, "targets": [94], "question": "frontier"},
    )()
    to_94, accuracy = tool.records(report, args)
    assert to_94["name"] == "run.engine_to_94" and to_94["question"] == "frontier"
    assert to_94["duration"]["seconds"] == [80.0, 82.0]  # seed 43 never got there
    assert "Reached at epoch 2, never, 2 (one per seed (42, 43, 44))" in to_94["note"]
    assert accuracy["name"] == "run.accuracy" and accuracy["kind"] == "accuracy"
    assert accuracy["accuracy"]["seeds"] == [42, 43, 44]
    assert accuracy["accuracy"]["values"] == finals
    expected = describe(finals)
    assert accuracy["accuracy"]["mean"] == pytest.approx(expected["mean"])
    assert accuracy["accuracy"]["ci95"] == pytest.approx(expected["ci95"])
    for record in (to_94, accuracy):
        assert check_record(record, record["name"]) == record
    report["engine_seeds"] = []  # repeats of the recipe's own seed: no accuracy over seeds
    assert [record["name"] for record in tool.records(report, args)] == ["run.engine_to_94"]


@pytest.mark.slow
def test_a_timing_for_a_page_that_does_not_exist_is_refused_before_it_runs(tmp_path):
    """--question names the results page; a wrong one stops the tool before anything is timed
    or written, naming the pages there are."""
    result = subprocess.run(
        [
            sys.executable, str(TOOLS[0].parent / "chapter_script_timing.py"), "--engine-only",
            "--data", str(tmp_path / "x.npz"), "--output-json", str(tmp_path / "t.json"),
            "--seeds", "42", "43", "--publish", "run", "--question", "frontpage",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "frontpage is no results page" in result.stderr and "frontier" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "t.json").exists()
