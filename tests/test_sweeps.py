"""Sweeps: grid points x seeds fan out to jobs, every value is checked like its key, and the
sweep's table and plot state every point with its interval and the best one marked."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import subprocess

import pytest
from conftest import assert_no_traceback, base_config, flat, snakemake, write_config
from fashion_cnn.config.sweeps import (
    all_runs,
    check_old_point_folders,
    format_value,
    point_folder,
    sweep_points,
)
from fashion_cnn.config.validation import experiment_settings, validate_config
from fashion_cnn.core.errors import UserError
from fashion_cnn.results.stats import describe
from fashion_cnn.results.sweeps import summarize_sweep
from scipy import stats
from test_replicates import job_counts

LR_BATCH = {
    "experiment": "cnn_baseline",
    "grid": {"learning_rate": [3.0e-4, 1.0e-3, 3.0e-3], "batch_size": [64, 256]},
    "seeds": [1, 2],
}


def with_sweep(sweep: dict, name: str = "lr_batch", run: bool = True) -> dict:
    config = base_config()  # config.yaml, validated
    config = copy.deepcopy(config)
    config["sweeps"] = {name: copy.deepcopy(sweep)}
    config["run_sweeps"] = [name] if run else []
    return validate_config(config)


def sweep_error(sweep: dict, **changes) -> str:
    config = copy.deepcopy(base_config())
    config["sweeps"] = {"s": sweep}
    config.update(changes)
    with pytest.raises(UserError) as error:
        validate_config(config)
    paragraph = error.value.paragraph()
    assert "\n\n" not in paragraph
    return flat(paragraph)


def test_points_are_every_combination_in_readable_stable_folders():
    config = with_sweep(LR_BATCH)
    points = sweep_points("lr_batch", config["sweeps"]["lr_batch"])
    assert [point.folder for point in points] == [
        "learning_rate=0.0003/batch_size=64",
        "learning_rate=0.0003/batch_size=256",
        "learning_rate=0.001/batch_size=64",
        "learning_rate=0.001/batch_size=256",
        "learning_rate=0.003/batch_size=64",
        "learning_rate=0.003/batch_size=256",
    ]
    assert points[0].run == "sweeps/lr_batch/learning_rate=0.0003/batch_size=64"
    assert format_value(True) == "true" and format_value("a/b c.pth") == "a-b-c.pth"
    assert (
        point_folder({"epochs": 100, "augmentation": "chapter"})
        == "epochs=100/augmentation=chapter"
    )


def test_points_trained_under_the_old_comma_names_stop_the_run_with_the_commands_that_move_them(
    tmp_path,
):
    """Earlier versions joined a point's keys with commas, which a cluster job cannot carry (the
    SLURM plugin starts it with --target-jobs, split on commas). A point still in such a folder,
    with its logs and run times, is found; the paragraph's commands, run as printed, move every
    file where the workflow now looks, and the check then passes."""
    config = with_sweep(LR_BATCH)
    results = tmp_path / "my results"  # a space: the commands quote their paths
    old = "learning_rate=0.001,batch_size=64"
    trained = {
        f"sweeps/lr_batch/{old}/seed-1/model.pt": "weights",
        f"sweeps/lr_batch/{old}/metrics.json": "{}",
        f"logs/train_model/sweeps/lr_batch/{old}/seed-1.log": "log",
        f"benchmarks/train_model/sweeps/lr_batch/{old}/seed-1.tsv": "s",
        "sweeps/lr_batch/unrelated,folder/kept.txt": "not a point of this grid",
    }
    for name, text in trained.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(text)
    with pytest.raises(UserError) as error:
        check_old_point_folders(config, results)
    paragraph = error.value.paragraph()
    assert (
        "1 sweep point(s)" in flat(paragraph)
        and "(3 folders" in flat(paragraph)
        and "Nothing was run" in paragraph
    )
    commands = error.value.commands
    assert len(commands) == 3 and all(line in paragraph for line in commands)
    for command in commands:
        subprocess.run(["bash", "-c", command], check=True)
    new = "learning_rate=0.001/batch_size=64"
    for name, text in trained.items():
        moved = results / name.replace(old, new)
        assert moved.read_text() == text, moved
    check_old_point_folders(config, results)  # nothing left to move
    # a one-key sweep's names never had a comma: nothing to look for
    check_old_point_folders(
        with_sweep({"experiment": "cnn_baseline", "grid": {"epochs": [1]}}), results
    )


def test_a_point_is_its_base_experiment_with_the_points_values_and_the_sweeps_seeds():
    config = with_sweep(LR_BATCH)
    runs = all_runs(config)
    run = runs["sweeps/lr_batch/learning_rate=0.003/batch_size=256"]
    assert run.experiment == "cnn_baseline"
    base = config["experiments"]["cnn_baseline"]
    assert run.settings == dict(base, learning_rate=3.0e-3, batch_size=256, seeds=[1, 2])
    # the job gets the base experiment's entry with the point's values: the CLI validates it
    settings = json.loads(experiment_settings(config, run, 2))
    job = settings["experiments"]["cnn_baseline"]
    assert (job["learning_rate"], job["batch_size"], job["seed"]) == (3.0e-3, 256, 2)
    restored = validate_config(copy.deepcopy(settings))["experiments"]["cnn_baseline"]
    assert restored == dict(base, learning_rate=3.0e-3, batch_size=256, seed=2, seeds=[2])
    # without its own seeds a sweep runs the base experiment's
    no_seeds = {key: value for key, value in LR_BATCH.items() if key != "seeds"}
    config = with_sweep(dict(no_seeds, experiment="cnn_small_plain"))
    point = all_runs(config)["sweeps/lr_batch/learning_rate=0.0003/batch_size=64"]
    assert point.settings["seeds"] == config["experiments"]["cnn_small_plain"]["seeds"]


@pytest.mark.parametrize(
    ("sweep", "changes", "expected"),
    [
        (
            {"experiment": "cnn_baseline", "grid": {"learning_rte": [1.0e-3]}},
            {},
            "sweeps.s.grid sweeps 'learning_rte', which is not an experiment key. Did you mean "
            "'learning_rate'?",
        ),
        ({"experiment": "cnn_baseline", "grid": {}}, {}, "sweeps.s.grid is empty"),
        (
            {"experiment": "cnn_baseline", "grid": {"epochs": []}},
            {},
            "sweeps.s.grid.epochs = [] has too few values",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"learning_rate": [1.0e-3, 50.0]}},
            {},
            "sweeps.s.grid.learning_rate[1] = 50.0 is out of range; it must be at most 10",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"optimizer": ["adam", "lion"]}},
            {},
            'sweeps.s.grid.optimizer[1] = "lion" is not allowed; choose one of',
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"learning_rate": ["3e-4"]}},
            {},
            "write 3.0e-4",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"epochs": [10, 10]}},
            {},
            "sweeps.s.grid gives two points the same folder name 'epochs=10'",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"weights": ["a b.pth", "a-b.pth"]}},
            {},
            "same folder name 'weights=a-b.pth'",
        ),
        (
            {"experiment": "cnn_basline", "grid": {"epochs": [1]}},
            {},
            "sweeps.s.experiment names 'cnn_basline', which is not an experiment under "
            "experiments. Did you mean 'cnn_baseline'?",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"seed": [1, 2]}},
            {},
            "sweeps 'seed', which a sweep does not set: give the seeds in the sweep's own",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"weights": ["imagenet"]}},
            {},
            'weights (sweeps.s, point weights=imagenet) = "imagenet" needs a model with published ImageNet weights',
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"epochs": [1]}},
            {"run_sweeps": ["t"]},
            "run_sweeps names 't', which is not a sweep under sweeps. Defined sweeps: s.",
        ),
        (
            {"experiment": "cnn_baseline", "grid": {"epochs": [1]}, "seeds": [1, 1]},
            {},
            "sweeps.s.seeds = [1, 1] lists a value twice",
        ),
    ],
    ids=[
        "unknown key",
        "empty grid",
        "empty values",
        "value out of range",
        "value not in the registry",
        "number read as text",
        "value listed twice",
        "values with one folder name",
        "unknown experiment",
        "seed swept",
        "point in conflict",
        "unknown run_sweeps",
        "repeated seed",
    ],
)
def test_a_bad_sweep_is_one_paragraph_naming_the_problem(sweep, changes, expected):
    paragraph = sweep_error(sweep, **changes)
    assert expected in paragraph
    assert paragraph.startswith("Config error: ")


def test_an_experiment_cannot_take_the_name_of_a_results_folder():
    config = copy.deepcopy(base_config())
    config["experiments"]["sweeps"] = copy.deepcopy(config["experiments"]["cnn_baseline"])
    with pytest.raises(UserError, match="'sweeps' is the name of a folder the workflow keeps"):
        validate_config(config)


@pytest.mark.slow
def test_a_sweep_plans_grid_times_seeds_jobs_and_is_opt_in(tmp_path):
    """The issue's check: a sweep plans grid x seeds jobs; defined but not in run_sweeps, it
    plans nothing."""
    sweep = json.dumps({"lr_batch": LR_BATCH})
    extra = write_config(tmp_path / "extra.yaml", f"sweeps: {sweep}\nrun_sweeps: [lr_batch]\n")
    result = snakemake(tmp_path, "-n", configfiles=[extra], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    counts = job_counts(output)
    # config.yaml's own: 1 + 5 + 5 + 1 seeds; the sweep: 3 x 2 points x 2 seeds
    assert counts["train_model"] == 12 + 12 and counts["evaluate_model"] == 12 + 12
    assert counts["aggregate_seeds"] == 4 + 6 and counts["summarize_sweep"] == 1
    trained = re.findall(r"rule train_model:\n(?:\s+\w+:.*\n)*?\s+wildcards: (.*)", output)
    assert "experiment=sweeps/lr_batch/learning_rate=0.003/batch_size=256, seed=2" in trained
    # filters and ONNX only for the experiments, not for every point
    assert counts["export_onnx"] == 4
    defined_only = write_config(tmp_path / "defined.yaml", f"sweeps: {sweep}\n")
    result = snakemake(tmp_path, "-n", configfiles=[defined_only], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "summarize_sweep" not in job_counts(result.stdout + result.stderr)


@pytest.mark.slow
def test_snakemake_stops_on_a_bad_sweep_before_any_job(tmp_path):
    bad = {"s": {"experiment": "cnn_small_plain", "grid": {"batch_size": [64, 0]}}}
    extra = write_config(tmp_path / "extra.yaml", f"sweeps: {json.dumps(bad)}\n")
    result = snakemake(tmp_path, "-n", configfiles=[extra], timeout=120)
    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert "sweeps.s.grid.batch_size[1] = 0 is out of range; it must be at least 1" in output
    assert_no_traceback(output)
    assert not (tmp_path / "results").exists()


def fake_point_metrics(run: str, values: dict, accuracies: list[float]) -> dict:
    return {
        "experiment": run,
        "config": dict(values),
        "seeds": [1, 2, 3][: len(accuracies)],
        "test_accuracy": describe(accuracies)["mean"],
        "test_accuracy_over_seeds": describe(accuracies),
        "trust_over_seeds": {},  # beyond accuracy: the sweep's table does not read it
    }


def test_the_table_marks_the_best_and_tests_each_point_against_it(tmp_path):
    """Numbers computed by hand and by scipy's reference functions, against the written table."""
    accuracies = {  # learning_rate -> per-seed accuracies (seeds 1, 2, 3)
        3.0e-4: [0.80, 0.82, 0.81],
        1.0e-3: [0.85, 0.86, 0.84],
        3.0e-3: [0.849, 0.851, 0.85],
    }
    config = with_sweep(
        {"experiment": "cnn_baseline", "grid": {"learning_rate": [3.0e-4, 1.0e-3, 3.0e-3]}}
    )
    from fashion_cnn.config.sweeps import sweep_definition

    definition = sweep_definition(config, "lr_batch")
    paths = []
    for index, point in enumerate(definition["points"]):
        path = tmp_path / f"{index}.json"
        values = accuracies[point["values"]["learning_rate"]]
        path.write_text(json.dumps(fake_point_metrics(point["run"], point["values"], values)))
        paths.append(path)
    outputs = {name: tmp_path / f"sweep.{name}" for name in ("csv", "markdown", "html", "plot")}
    outputs["plot"] = tmp_path / "sweep.png"
    best = summarize_sweep(definition, paths, outputs)
    assert best["folder"] == "learning_rate=0.001"
    rows = list(csv.DictReader(outputs["csv"].open()))
    assert [row["best"] for row in rows] == ["False", "True", "False"]
    low = rows[0]
    values = accuracies[3.0e-4]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = stats.t.ppf(0.975, 2) * std / math.sqrt(3)
    assert float(low["mean"]) == pytest.approx(mean)
    assert float(low["std"]) == pytest.approx(std)
    assert float(low["ci95_low"]) == pytest.approx(mean - half)
    reference = stats.ttest_rel(values, accuracies[1.0e-3])
    assert float(low["p_value"]) == pytest.approx(reference.pvalue)
    assert float(low["difference_to_best"]) == pytest.approx(mean - 0.85)
    assert "below the best beyond seed noise" in low["verdict"]
    assert "within seed noise of the best" in rows[2]["verdict"]
    markdown = outputs["markdown"].read_text()
    assert "| 0.001 | **85.00% ± 1.00 (n=3)** |" in markdown
    assert outputs["plot"].stat().st_size > 10_000
    assert "<table>" in outputs["html"].read_text()


def test_a_stale_point_is_refused(tmp_path):
    config = with_sweep({"experiment": "cnn_baseline", "grid": {"epochs": [1, 2]}})
    from fashion_cnn.config.sweeps import sweep_definition

    definition = sweep_definition(config, "lr_batch")
    paths = []
    for index, point in enumerate(definition["points"]):
        path = tmp_path / f"{index}.json"
        stale = dict(point["values"], epochs=99)
        path.write_text(json.dumps(fake_point_metrics(point["run"], stale, [0.5])))
        paths.append(path)
    outputs = {name: tmp_path / f"sweep.{name}" for name in ("csv", "markdown", "html", "plot")}
    with pytest.raises(UserError, match="not the point sweeps/lr_batch/epochs=1"):
        summarize_sweep(definition, paths, outputs)
    assert not outputs["csv"].exists()
