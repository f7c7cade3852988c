"""Results read back are checked before any table, summary or comparison trusts them: a seed's
metrics.json and an experiment's aggregate each have a schema, and the aggregate's figures must
agree with each other."""

from __future__ import annotations

import json

import pytest
from conftest import flat
from fashion_cnn.core.errors import UserError
from fashion_cnn.results.reading import read_metrics
from fashion_cnn.results.stats import describe


def _aggregate() -> dict:
    values = [0.9088, 0.9088, 0.9000]
    return {
        "experiment": "cnn_baseline",
        "test_accuracy": describe(values)["mean"],
        "seeds": [42, 43, 44],
        "test_accuracy_over_seeds": describe(values),
        "trust_over_seeds": {"ece": describe([0.02, 0.03, 0.025])},
    }


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m["test_accuracy_over_seeds"].update(mean=1.5), "1.5 is greater than the maximum of 1"),
        (lambda m: m.update(test_accuracy="0.9"), "'0.9' is not of type 'number'"),
        (lambda m: m["test_accuracy_over_seeds"].update(mean=0.95), "the mean is 0.95, but its values average"),
        (lambda m: m.update(test_accuracy=0.5), "test_accuracy is 0.5, but its values average"),
        (lambda m: m.update(seeds=[42, 43]), "n = 3 but 3 values and 2 seeds"),
        (lambda m: m.pop("seeds"), "'seeds' is a required property"),
        (lambda m: m["trust_over_seeds"]["ece"].update(mean=-0.1), "-0.1 is less than the minimum of 0"),
        (lambda m: m.pop("trust_over_seeds"), "'trust_over_seeds' is a required property"),
    ],
    ids=["a mean of 1.5", "a number as text", "a mean its values disagree with",
         "a headline the mean disagrees with", "a seed missing", "no seeds",
         "a negative calibration error", "no figures beyond accuracy"],
)  # fmt: skip
def test_an_edited_aggregate_is_refused_with_one_paragraph(tmp_path, change, named):
    path = tmp_path / "metrics.json"
    metrics = _aggregate()
    path.write_text(json.dumps(metrics))
    assert read_metrics(path, over_seeds=True)["experiment"] == "cnn_baseline"
    change(metrics)
    path.write_text(json.dumps(metrics))
    with pytest.raises(UserError) as refused:
        read_metrics(path, over_seeds=True)
    message = flat(refused.value.paragraph())
    assert named in message and "delete it and run Snakemake again" in message


def test_a_cut_or_binary_file_is_refused(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(_aggregate())[:40])
    with pytest.raises(UserError, match="cannot be read as JSON"):
        read_metrics(path, over_seeds=True)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="cannot be read as JSON"):
        read_metrics(path)
    with pytest.raises(UserError, match="cannot be read as JSON"):
        read_metrics(tmp_path / "missing.json")
