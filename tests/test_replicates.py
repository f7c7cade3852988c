"""Seeds fan out to jobs: one training and one evaluation per seed, one aggregate per experiment."""

from __future__ import annotations

import json
import re

import pytest
from conftest import base_config, snakemake, write_config
from fashion_cnn.config.validation import experiment_settings


def job_counts(output: str) -> dict[str, int]:
    """The dry run's job table: rule -> count."""
    return {
        rule: int(count)
        for rule, count in re.findall(r"^(\w+)\s+(\d+)$", output, re.MULTILINE)
        if rule != "total"
    }


@pytest.mark.slow
def test_seeds_plan_one_training_job_each(tmp_path):
    """The issue's check: seeds [1, 2, 3] on cnn_small_plain plans three train_model jobs for it."""
    extra = write_config(
        tmp_path / "extra.yaml", "experiments:\n  cnn_small_plain: {seeds: [1, 2, 3]}\n"
    )
    result = snakemake(tmp_path, "-n", configfiles=[extra], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    trained = re.findall(r"rule train_model:\n(?:\s+\w+:.*\n)*?\s+wildcards: (.*)", output)
    plain = sorted(w for w in trained if w.startswith("experiment=cnn_small_plain,"))
    assert plain == [f"experiment=cnn_small_plain, seed={seed}" for seed in (1, 2, 3)]
    # the other experiments keep their seeds: 5 for the augmented one, 1 for the two others
    assert job_counts(output)["train_model"] == 3 + 5 + 1 + 1
    assert job_counts(output)["aggregate_seeds"] == 4
    assert job_counts(output)["compare_experiments"] == 1
    # filters and the ONNX export come from the representative seed, the first listed
    assert re.search(
        r"rule export_onnx:\n\s+input: results/cnn_small_plain/seed-1/model.pt", output
    )


@pytest.mark.slow
def test_a_comparison_trains_nothing_that_does_not_run(tmp_path):
    """config.yaml compares the two 500-image experiments; a run of one experiment alone neither
    trains the other nor makes the comparison."""
    extra = write_config(tmp_path / "extra.yaml", "run_experiments: [cnn_small_plain]\n")
    result = snakemake(tmp_path, "-n", configfiles=[extra], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["train_model"] == 5 and "compare_experiments" not in counts


def test_adding_a_seed_changes_no_finished_replicates_settings():
    """A job reruns when its settings change: each replicate's settings hold its own seed and not
    the list, so adding a seed leaves the finished replicates alone."""
    config = base_config()
    before = experiment_settings(config, "cnn_small_plain", 42)
    config["experiments"]["cnn_small_plain"]["seeds"] = [42, 43, 44, 45, 46, 47]
    assert experiment_settings(config, "cnn_small_plain", 42) == before
    assert json.loads(before)["experiments"]["cnn_small_plain"].get("seed", 42) == 42
    other = json.loads(experiment_settings(config, "cnn_small_plain", 47))
    assert other["experiments"]["cnn_small_plain"]["seed"] == 47
