"""The real DAG through Snakemake on a tiny configuration: every experiment, real data.

Runs once per session (a few minutes on 2 cores); the tests below read what it produced. It runs
in a folder, and writes to `results:` and `resources:` folders, whose names hold spaces, quotes and
shell commands (configs/hostile_paths.yaml): every value must reach each job as one argument.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from conftest import CONFIGS, REPO, snakemake
from fashion_cnn import CLASS_NAMES
from fashion_cnn.models.checkpoint import load_checkpoint
from PIL import Image

pytestmark = pytest.mark.workflow

TINY = CONFIGS / "tiny.yaml"
HOSTILE = CONFIGS / "hostile_paths.yaml"
CONFIGFILES = [TINY, HOSTILE]
RESULTS = yaml.safe_load(HOSTILE.read_text())["results"]
RESOURCES = yaml.safe_load(HOSTILE.read_text())["resources"]
INJECTED = {f"INJECTED_{n}" for n in range(1, 7)}
EXPERIMENTS = [
    "cnn_baseline",
    "cnn_small_augmented",
    "cnn_small_plain",
    "resnet18_finetune",
    "cnn_fast",
    "cnn_dropout",  # with a validation split
    "vit_small",
    "cnn_frontier",  # random erasing, the weights' moving average (what is evaluated, exported)
    "cnn_500_fixmatch",  # labelled and unlabelled images in every step
]
# tiny.yaml's seeds: cnn_small_plain has two replicates, the others one (config.yaml's seed)
SEEDS = {name: [42] for name in EXPERIMENTS} | {
    "cnn_small_plain": [42, 7],
    "cnn_small_augmented": [42, 7],
}
PER_SEED = [
    "model.pt",
    "history.csv",
    "model_summary.txt",
    "metrics.json",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "per_class_accuracy.csv",
    "test_scores.npz",
    "robustness.csv",
]
PER_EXPERIMENT = [  # over the seeds, or of the representative seed
    "metrics.json",
    "per_seed.csv",
    "model_summary.txt",
    "confusion_matrix.png",
    "filters.png",
    "filters_layers.png",
    "training_curves.png",
    "model.onnx",
    "onnx_check.json",
    "classification_report.csv",
    "robustness.csv",
    "robustness.png",
    "reliability.png",
    "confused_pairs.csv",
    "failures.png",
]
DATA_FIGURES = [
    "samples.png",
    "sample_colorbar.png",
    "augmentation/flip.png",
    "augmentation/random_flips.png",
    "augmentation/random_rotations.png",
    "augmentation/random_resized_crops.png",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, debian_mirror):
    workdir = tmp_path_factory.mktemp("work flow; x")
    result = snakemake(workdir, "--cores", "2", configfiles=CONFIGFILES)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path, min_size=(100, 100)) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], path
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5, f"{path} looks blank"


def test_every_output_exists_and_parses(tiny_run):
    results = tiny_run / RESULTS
    assert np.load(results / "data" / "fashion_mnist.npz")["train_images"].shape == (60000, 28, 28)
    for name in DATA_FIGURES:
        assert_png(results / "data" / name)
    for experiment in EXPERIMENTS:
        folder = results / experiment
        for name in PER_EXPERIMENT:
            assert (folder / name).is_file(), f"{experiment}/{name} missing"
        assert sorted(p.name for p in folder.glob("seed-*")) == sorted(
            f"seed-{seed}" for seed in SEEDS[experiment]
        )
        for seed in SEEDS[experiment]:
            replicate = folder / f"seed-{seed}"
            for name in PER_SEED:
                assert (replicate / name).is_file(), f"{experiment}/seed-{seed}/{name} missing"
            checkpoint = load_checkpoint(replicate / "model.pt")
            assert checkpoint["experiment"] == experiment and checkpoint["complete"]
            assert checkpoint["seed"] == seed == read_json(replicate / "metrics.json")["seed"]
            with open(replicate / "confusion_matrix.csv", newline="") as handle:
                rows = list(csv.reader(handle))
            assert len(rows) == 11 and sum(int(v) for row in rows[1:] for v in row[1:]) == 10000
            history = read_rows(replicate / "history.csv")
            assert len(history) == checkpoint["config"]["epochs"]
            validated = checkpoint["config"]["validation_images"] > 0
            assert all(("valid_accuracy" in row) == validated for row in history)
        onnx.checker.check_model(onnx.load(str(folder / "model.onnx")))
        assert read_json(folder / "onnx_check.json")["parity"]["passed"]
        for name in (
            "confusion_matrix.png",
            "filters.png",
            "filters_layers.png",
            "training_curves.png",
            "robustness.png",
            "reliability.png",
            "failures.png",
        ):
            assert_png(folder / name)
    assert_png(results / "summary" / "robustness.png")
    assert not list(results.rglob(".*.partial"))
    dropout_history = read_rows(results / "cnn_dropout" / "seed-42" / "history.csv")
    assert 0 < float(dropout_history[-1]["valid_accuracy"]) <= 1


def test_seeds_are_aggregated_and_one_seed_has_no_invented_spread(tiny_run):
    """cnn_small_plain: two replicates, summarised from their own metrics; one-seed experiments
    show n = 1 with no standard deviation and no interval."""
    folder = tiny_run / RESULTS / "cnn_small_plain"
    per_seed = [read_json(folder / f"seed-{seed}" / "metrics.json") for seed in (42, 7)]
    accuracies = [metrics["test_accuracy"] for metrics in per_seed]
    assert accuracies[0] != accuracies[1]  # two seeds, two different models
    aggregate = read_json(folder / "metrics.json")
    over_seeds = aggregate["test_accuracy_over_seeds"]
    assert over_seeds["n"] == 2 and over_seeds["values"] == accuracies
    assert over_seeds["mean"] == pytest.approx(sum(accuracies) / 2)
    assert over_seeds["std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2**0.5)
    low, high = over_seeds["ci95"]
    assert low < over_seeds["mean"] < high
    assert aggregate["test_accuracy"] == over_seeds["mean"]
    assert aggregate["seeds"] == [42, 7] and aggregate["representative_seed"] == 42
    assert [int(row["seed"]) for row in read_rows(folder / "per_seed.csv")] == [42, 7]
    single = read_json(tiny_run / RESULTS / "cnn_baseline" / "metrics.json")
    assert single["test_accuracy_over_seeds"]["n"] == 1
    assert single["test_accuracy_over_seeds"]["std"] is None
    assert single["test_accuracy_over_seeds"]["ci95"] is None
    rows = {row["experiment"]: row for row in read_rows(tiny_run / RESULTS / "summary/summary.csv")}
    assert rows["cnn_small_plain"]["seeds_n"] == "2" and rows["cnn_baseline"]["seeds_n"] == "1"
    markdown = (tiny_run / RESULTS / "summary" / "summary.md").read_text()
    assert "(n=2)" in markdown and "(n=1)" in markdown


def test_no_config_value_reached_the_shell(tiny_run):
    """Nothing the folder names or the mirror URL hold ran as a command, anywhere."""
    made = [*tiny_run.rglob("INJECTED_*"), *REPO.glob("INJECTED_*"), *Path.cwd().glob("INJECTED_*")]
    assert not [p for p in made if p.name in INJECTED], made
    assert (tiny_run / RESOURCES / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    log = (tiny_run / RESULTS / "logs" / "download_data.log").read_text()
    assert "file:///nowhere;touch${IFS}INJECTED_5{x}$(touch${IFS}INJECTED_6)/" in log


def test_the_chapters_claim_is_a_paired_comparison_computed_by_scipy(tiny_run):
    """config.yaml compares augmented and plain on 500 images; both ran seeds 42 and 7 here."""
    from scipy import stats

    rows = read_rows(tiny_run / RESULTS / "comparisons" / "comparisons.csv")
    pair = ("cnn_small_augmented", "cnn_small_plain")
    assert [(row["a"], row["b"], row["measure"]) for row in rows] == [
        (*pair, measure) for measure in ("test_accuracy", "corrupted_accuracy", "ece")
    ]
    row = rows[0]
    accuracy = {
        name: [
            read_json(tiny_run / RESULTS / name / f"seed-{seed}" / "metrics.json")["test_accuracy"]
            for seed in (7, 42)
        ]
        for name in ("cnn_small_augmented", "cnn_small_plain")
    }
    expected = stats.ttest_rel(accuracy["cnn_small_augmented"], accuracy["cnn_small_plain"])
    assert row["test"] == "paired t-test over seeds 7, 42"
    assert float(row["p_value"]) == pytest.approx(expected.pvalue)
    low, high = expected.confidence_interval()
    assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx((low, high))
    assert "seed noise" in row["verdict"]
    markdown = (tiny_run / RESULTS / "comparisons" / "comparisons.md").read_text()
    assert "cnn_small_augmented − cnn_small_plain" in markdown
    # robustness over the same seeds: each seed's mean over its corrupted sets, paired
    corrupted = {
        name: [
            np.mean(
                [
                    float(r["accuracy"])
                    for r in read_rows(
                        tiny_run / RESULTS / name / f"seed-{seed}" / "robustness.csv"
                    )
                    if r["corruption"] != "none"
                ]
            )
            for seed in (7, 42)
        ]
        for name in pair
    }
    expected = stats.ttest_rel(*(corrupted[name] for name in pair))
    assert float(rows[1]["p_value"]) == pytest.approx(expected.pvalue)
    assert "accuracy under corruption" in markdown and "calibration error" in markdown


def test_figures_beyond_accuracy_agree_with_an_independent_computation(tiny_run):
    """Per seed, the calibration error is torchmetrics' and macro F1 scikit-learn's on the
    scores the evaluation saved; over seeds, the tables are the seeds' means; the most confused
    pair is the confusion matrix's largest off-diagonal cell; the summary carries the figures."""
    import torch
    from sklearn.metrics import f1_score
    from torchmetrics.functional.classification import multiclass_calibration_error

    folder = tiny_run / RESULTS / "cnn_small_plain"
    ece, f1, noise = [], [], []
    for seed in SEEDS["cnn_small_plain"]:
        metrics = read_json(folder / f"seed-{seed}" / "metrics.json")
        with np.load(folder / f"seed-{seed}" / "test_scores.npz") as scores:
            log_probs, labels = scores["log_probs"], scores["labels"].astype(np.int64)
        probs = torch.from_numpy(log_probs.astype(np.float64)).softmax(dim=1)
        expected = multiclass_calibration_error(probs, torch.from_numpy(labels), 10, n_bins=15)
        assert metrics["calibration"]["ece"] == pytest.approx(float(expected), abs=1e-5)
        ece.append(float(expected))
        f1.append(f1_score(labels, log_probs.argmax(axis=1), average="macro", zero_division=0))
        rows = read_rows(folder / f"seed-{seed}" / "robustness.csv")
        assert len(rows) == 1 + 7 * 3 and {int(r["images"]) for r in rows} == {500}
        noise.append(float(rows[3]["accuracy"]))  # gaussian_noise, severity 3
        assert rows[3]["corruption"] == "gaussian_noise" and rows[3]["severity"] == "3"
    table = {(r["row"], r["measure"]): r for r in read_rows(folder / "classification_report.csv")}
    assert float(table["macro average", "f1"]["mean"]) == pytest.approx(np.mean(f1))
    assert float(table["macro average", "f1"]["std"]) == pytest.approx(np.std(f1, ddof=1))
    assert table["Bag", "recall"]["seeds_n"] == "2" and table["Bag", "recall"]["support"] == "1000"
    robustness = {(r["corruption"], r["severity"]): r for r in read_rows(folder / "robustness.csv")}
    assert float(robustness["gaussian_noise", "3"]["accuracy"]) == pytest.approx(np.mean(noise))
    matrix = np.loadtxt(
        folder / "seed-42" / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 11)
    )
    np.fill_diagonal(matrix, -1)
    true, predicted = np.unravel_index(matrix.argmax(), matrix.shape)
    first = read_rows(folder / "confused_pairs.csv")[0]
    assert int(first["images"]) == matrix.max()
    assert (
        matrix[CLASS_NAMES.index(first["true"]), CLASS_NAMES.index(first["predicted"])]
        == (matrix[true, predicted])
    )
    summary = {
        r["experiment"]: r for r in read_rows(tiny_run / RESULTS / "summary" / "summary.csv")
    }
    assert float(summary["cnn_small_plain"]["ece"]) == pytest.approx(np.mean(ece), abs=1e-5)
    temperature = read_json(folder / "seed-42" / "metrics.json")["calibration"]["temperature"]
    assert "never read" in temperature["fitted_on"] and temperature["fitted_images"] == 1000


def test_metrics_carry_provenance(tiny_run):
    metrics = read_json(tiny_run / RESULTS / "cnn_baseline" / "metrics.json")
    assert 0.1 <= metrics["test_accuracy"] <= 1 and metrics["test_images"] == 10000
    assert len(metrics["per_class_accuracy"]) == 10
    assert metrics["representative_seed"] == 42 and metrics["config"]["train_subset"] == 300
    assert metrics["training"]["seconds"] > 0 and metrics["training"]["images"] == 300
    assert metrics["training"]["device"].startswith("cpu")
    provenance = metrics["provenance"]
    assert provenance["git"]["commit"] and len(provenance["git"]["commit"]) == 40
    assert provenance["versions"]["torch"].startswith("2.14.1")
    resnet = read_json(tiny_run / RESULTS / "resnet18_finetune" / "metrics.json")
    status = read_json(tiny_run / RESOURCES / "weights" / "resnet18_imagenet.json")
    if status["available"]:
        assert resnet["weights_source"].startswith("imagenet")
    else:  # offline, as on the machine this was written on: flagged, not hidden
        assert resnet["weights_source"] == "random init (ImageNet weights unavailable)"


def test_summary_lists_every_experiment_with_its_accuracy(tiny_run):
    summary = tiny_run / RESULTS / "summary"
    rows = read_rows(summary / "summary.csv")
    assert [row["experiment"] for row in rows] == EXPERIMENTS
    for row in rows:
        metrics = read_json(tiny_run / RESULTS / row["experiment"] / "metrics.json")
        assert float(row["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    markdown = (summary / "summary.md").read_text()
    assert "| cnn_small_augmented |" in markdown and "79.24%" in markdown


def test_every_job_has_a_log_and_costly_ones_a_benchmark(tiny_run):
    logs, benchmarks = tiny_run / RESULTS / "logs", tiny_run / RESULTS / "benchmarks"
    for experiment in EXPERIMENTS:
        for rule in ("export_onnx", "plot_filters", "aggregate_seeds"):
            assert (logs / rule / f"{experiment}.log").stat().st_size > 0
        assert (benchmarks / "export_onnx" / f"{experiment}.tsv").read_text().startswith("s\t")
        for seed in SEEDS[experiment]:
            for rule in ("train_model", "evaluate_model"):
                assert (logs / rule / experiment / f"seed-{seed}.log").stat().st_size > 0
                tsv = benchmarks / rule / experiment / f"seed-{seed}.tsv"
                assert tsv.read_text().startswith("s\t")
    assert "epoch 1/1" in (logs / "train_model" / "cnn_baseline" / "seed-42.log").read_text()


def test_a_sweep_point_is_a_run_of_its_own_and_the_table_marks_the_best(tiny_run):
    """tiny.yaml's 2-point sweep on 2 seeds: one folder per point with a replicate per seed, an
    aggregate per point, and the sweep's table and plot. Its point learning_rate=0.001 is
    cnn_small_plain's recipe, so it reproduces that experiment's accuracies seed by seed."""
    sweep = tiny_run / RESULTS / "sweeps" / "tiny_lr"
    points = ["learning_rate=0.001", "learning_rate=0.003"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == points
    for point in points:
        for seed in (42, 7):
            replicate = sweep / point / f"seed-{seed}"
            checkpoint = load_checkpoint(replicate / "model.pt")
            assert checkpoint["experiment"] == f"sweeps/tiny_lr/{point}"
            assert checkpoint["seed"] == seed
            assert f"learning_rate={checkpoint['config']['learning_rate']}" == point
        aggregate = read_json(sweep / point / "metrics.json")
        assert aggregate["seeds"] == [42, 7]
        assert aggregate["test_accuracy_over_seeds"]["n"] == 2
    same = read_json(sweep / points[0] / "metrics.json")["test_accuracy_over_seeds"]["values"]
    base = read_json(tiny_run / RESULTS / "cnn_small_plain" / "metrics.json")
    assert same == base["test_accuracy_over_seeds"]["values"]
    rows = read_rows(sweep / "sweep.csv")
    assert [row["point"] for row in rows] == points
    assert sorted(row["best"] for row in rows) == ["False", "True"]
    best = next(row for row in rows if row["best"] == "True")
    assert float(best["mean"]) == max(float(row["mean"]) for row in rows)
    other = next(row for row in rows if row["best"] == "False")
    assert 0 <= float(other["p_value"]) <= 1 and float(other["difference_to_best"]) <= 0
    assert "(n=2)" in (sweep / "sweep.md").read_text()
    assert_png(sweep / "sweep.png")


def test_a_second_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "--cores", "2", "--dry-run", configfiles=CONFIGFILES, timeout=300)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_renders_and_carries_the_accuracies(tiny_run, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "chromium is missing: apt-get install chromium (the README's test command does)"
        )
    report = tiny_run / RESULTS / "report.html"
    result = snakemake(tiny_run, "--report", report, configfiles=CONFIGFILES, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "Comparisons" in html and "comparisons.html" in html
    assert "Sweep tiny_lr" in html and "sweep.png" in html
    for name in ("reliability.png", "failures.png", "robustness.png", "classification_report.csv"):
        assert name in html, name
    for row in read_rows(tiny_run / RESULTS / "summary" / "summary.csv"):
        assert f"{100 * float(row['test_accuracy']):.2f}%" in html, row["experiment"]
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
            f"--screenshot={screenshot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert_png(screenshot, min_size=(1280, 900))
    with Image.open(screenshot) as image:
        grey = np.asarray(image.convert("L"))
    # the page drew text and the rule graph, not a blank or error page
    assert (grey < 128).mean() > 0.005
