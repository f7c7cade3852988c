"""Statistics over seeds against values worked out by hand (t critical values from tables)."""

from __future__ import annotations

import math

import pytest
from fashion_cnn.core.errors import UserError
from fashion_cnn.results.comparisons import compare
from fashion_cnn.results.replicates import aggregate_metrics
from fashion_cnn.results.stats import describe, percent_with_spread


def test_mean_std_and_t_interval_of_four_values():
    summary = describe([0.90, 0.91, 0.92, 0.93])
    assert summary["n"] == 4 and summary["mean"] == pytest.approx(0.915)
    std = math.sqrt(sum((v - 0.915) ** 2 for v in (0.90, 0.91, 0.92, 0.93)) / 3)
    assert summary["std"] == pytest.approx(std)  # sample standard deviation (n - 1)
    half_width = 3.182446305284263 * std / math.sqrt(4)  # t(0.975, df=3)
    assert summary["ci95"] == pytest.approx([0.915 - half_width, 0.915 + half_width])
    assert (summary["min"], summary["max"]) == (0.90, 0.93)


def test_two_values_use_the_wide_t_interval():
    summary = describe([0.78, 0.80])
    half_width = 12.706204736174707 * (0.02 / math.sqrt(2)) / math.sqrt(2)  # t(0.975, df=1)
    assert summary["ci95"] == pytest.approx([0.79 - half_width, 0.79 + half_width])


def test_one_value_has_no_invented_spread():
    summary = describe([0.9140])
    assert (summary["n"], summary["std"], summary["ci95"]) == (1, None, None)
    assert percent_with_spread(summary) == "91.40% (n=1)"
    assert percent_with_spread(describe([0.90, 0.92])) == "91.00% ± 1.41 (n=2)"


def _metrics(seed, accuracy, experiment="cnn_small_plain"):
    names = __import__("fashion_cnn").CLASS_NAMES
    per_class = {name: accuracy for name in names}
    scores = {"precision": accuracy, "recall": accuracy, "f1": accuracy}
    calibration = {"ece": 1 - accuracy, "nll": 0.3, "brier": 0.1}
    return {
        "experiment": experiment,
        "seed": seed,
        "test_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "classification": {
            "per_class": {name: {**scores, "support": 1000} for name in names},
            "macro": scores,
            "weighted": scores,
            "top2_accuracy": accuracy,
        },
        "calibration": {
            **calibration,
            "temperature": {"value": 1.5, "before": calibration, "after": calibration},
        },
        "config": {"seed": seed, "seeds": [seed]},
    }


def _robustness(accuracy):
    """A seed's robustness rows: the clean images, and two corruptions at 0.1 and 0.2 less."""
    rows = [{"corruption": "none", "severity": 0, "accuracy": accuracy}]
    return rows + [
        {"corruption": name, "severity": severity, "accuracy": accuracy - 0.1 * severity}
        for name in ("blur", "contrast")
        for severity in (1, 2)
    ]


def test_aggregate_keeps_the_representative_and_summarises_every_seed():
    values = [0.76, 0.78, 0.77]
    aggregate = aggregate_metrics(
        [_metrics(seed, value) for seed, value in zip([43, 42, 44], values, strict=True)],
        [_robustness(value) for value in values],
    )
    assert aggregate["representative_seed"] == 43 and aggregate["seeds"] == [43, 42, 44]
    assert aggregate["test_accuracy"] == pytest.approx(0.77)
    assert aggregate["test_accuracy_over_seeds"]["values"] == [0.76, 0.78, 0.77]
    assert aggregate["per_class_accuracy"]["Bag"] == pytest.approx(0.77)
    assert aggregate["config"]["seeds"] == [43, 42, 44] and "seed" not in aggregate
    trust = aggregate["trust_over_seeds"]
    assert trust["macro_f1"]["values"] == values and trust["ece"]["mean"] == pytest.approx(0.23)
    # each seed's mean over the four corrupted sets: its accuracy less 0.15
    assert trust["corrupted_accuracy"]["values"] == pytest.approx([v - 0.15 for v in values])
    robustness = aggregate["robustness_over_seeds"]
    assert robustness["none"]["0"]["values"] == values
    assert robustness["blur"]["2"]["mean"] == pytest.approx(0.77 - 0.2)
    assert aggregate["classification_over_seeds"]["Bag"]["recall"]["n"] == 3


@pytest.mark.parametrize(
    "metrics",
    [
        [_metrics(42, 0.7), _metrics(42, 0.8)],
        [_metrics(42, 0.7), _metrics(43, 0.8, experiment="cnn_baseline")],
    ],
    ids=["a seed twice", "two experiments"],
)
def test_aggregate_refuses_mixed_inputs(metrics):
    with pytest.raises(UserError, match="one file per seed"):
        aggregate_metrics(metrics, [_robustness(0.7)] * len(metrics))


def _aggregate(name, seeds, values):
    mean = sum(values) / len(values)
    return {
        "experiment": name,
        "seeds": seeds,
        "test_accuracy_over_seeds": {"values": values, "mean": mean},
    }


def test_paired_comparison_matches_the_hand_computed_t_test():
    """Differences 4, 2, 6 points on seeds 1-3: mean 4, sd 2, t = 4 / (2 / sqrt 3) = 3.464 with
    2 degrees of freedom; two-sided p = 1 - t / sqrt(t^2 + 2) = 0.0742 (the df = 2 closed form);
    interval 4 ± t(0.975, 2) 2 / sqrt 3 = 4 ± 4.303 * 1.155 points."""
    row = compare(
        _aggregate("cnn_small_augmented", [1, 2, 3], [0.80, 0.79, 0.81]),
        _aggregate("cnn_small_plain", [3, 1, 2], [0.75, 0.76, 0.77]),  # paired by seed, any order
    )
    t = 0.04 / (0.02 / math.sqrt(3))
    assert row["t"] == pytest.approx(t) and row["df"] == 2
    assert row["p_value"] == pytest.approx(1 - t / math.sqrt(t**2 + 2))
    half = 4.302652729749464 * 0.02 / math.sqrt(3)
    assert [row["ci95_low"], row["ci95_high"]] == pytest.approx([0.04 - half, 0.04 + half])
    assert row["test"] == "paired t-test over seeds 1, 2, 3"
    assert "does not stand out from seed noise (p = 0.0742)" in row["verdict"]


def test_unpaired_comparison_is_welch_and_one_run_gets_no_test():
    row = compare(
        _aggregate("a", [1, 2, 3], [0.80, 0.79, 0.81]), _aggregate("b", [4, 5], [0.76, 0.77])
    )
    assert row["test"] == "Welch's t-test (different seeds)"
    assert row["p_value"] == pytest.approx(
        0.02127341353547989
    )  # scipy 1.17.1, by hand: Welch df 2.88
    assert "+3.50 points: stands out from seed noise" in row["verdict"]
    single = compare(_aggregate("a", [1], [0.80]), _aggregate("b", [1, 2], [0.76, 0.77]))
    assert single["p_value"] is None and single["ci95_low"] is None
    assert single["difference"] == pytest.approx(0.80 - 0.765)
    assert single["verdict"].startswith("no test")
