"""Every user mistake through the command line a rule calls: exit status 2, one paragraph on
stderr naming the problem and the fix, no traceback, and nothing written."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch
from conftest import REPO, assert_no_traceback, cli, flat
from fashion_cnn.data import FILES
from fashion_cnn.models import resnet18_for_fashion


def _corrupt_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    return path


def _wrong_architecture(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(
        {
            "format": "fashion-cnn-checkpoint/1",
            "model": {"name": "cnn", "arguments": {"output_softmax": False}},
            "model_state": resnet18_for_fashion().state_dict(),
        },
        path,
    )
    return path


def _truncated_idx_folder(tmp_path, debian_mirror):
    for item in FILES:
        shutil.copyfile(debian_mirror / item.filename, tmp_path / item.filename)
    data = gzip.decompress((debian_mirror / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[: -784 * 3]))
    return tmp_path


def _train(folder, data, *arguments):
    outputs = [
        "--model",
        folder / "model.pt",
        "--history",
        folder / "h.csv",
        "--summary",
        folder / "s.txt",
    ]
    return [
        "train-model",
        "--configfile",
        REPO / "config.yaml",
        "--data",
        data,
        *outputs,
        *arguments,
    ]


CASES = {
    "corrupt checkpoint": (
        lambda t, m, d: [
            "evaluate-model",
            "--checkpoint",
            _corrupt_checkpoint(t),
            "--data",
            d,
            "--metrics",
            t / "m.json",
            "--confusion-csv",
            t / "c.csv",
            "--confusion-png",
            t / "c.png",
            "--per-class-csv",
            t / "p.csv",
        ],
        "corrupt or not a PyTorch file",
    ),
    "checkpoint of another architecture": (
        lambda t, m, d: [
            "export-onnx",
            "--configfile",
            REPO / "config.yaml",
            "--checkpoint",
            _wrong_architecture(t),
            "--data",
            d,
            "--onnx",
            t / "m.onnx",
            "--report",
            t / "r.json",
        ],
        "belong to another architecture",
    ),
    "truncated IDX file": (
        lambda t, m, d: [
            "prepare-data",
            "--raw-folder",
            _truncated_idx_folder(t, m),
            "--output",
            t / "out.npz",
        ],
        "is truncated",
    ),
    "corrupt dataset cache": (
        lambda t, m, d: [
            "plot-samples",
            "--data",
            _corrupt_checkpoint(t),
            "--grid",
            t / "g.png",
            "--colorbar",
            t / "c.png",
        ],
        "not a readable dataset cache",
    ),
    "unknown experiment": (
        lambda t, m, d: _train(t, d, "--experiment", "cnn_basline"),
        "No experiment named 'cnn_basline'",
    ),
    "missing config file": (
        lambda t, m, d: ["check-config", "--configfile", t / "nope.yaml"],
        "does not exist",
    ),
    "CUDA asked for, none here": (
        lambda t, m, d: _train(
            t, d, "--experiment", "cnn_baseline", "--config-json", '{"engine": {"device": "cuda"}}'
        ),
        "sees no CUDA device",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_gives_one_paragraph(case, tmp_path, debian_mirror, prepared_data):
    if case == "CUDA asked for, none here" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    build, expected = CASES[case]
    arguments = build(tmp_path, debian_mirror, prepared_data)  # makes the bad inputs
    before = set(tmp_path.rglob("*"))
    result = cli(*arguments)
    assert result.returncode == 2, result.stderr
    message = flat(result.stderr)
    assert expected in message
    assert message.count("fashion-cnn: ERROR:") == 1  # one paragraph, not a cascade
    assert_no_traceback(result.stderr)
    outputs = {
        p
        for p in tmp_path.rglob("*")
        if p.suffix in (".json", ".csv", ".png", ".onnx", ".npz", ".pt")
    }
    assert outputs <= before, f"{case} left outputs behind: {outputs - before}"
