"""Every user mistake through the command line a rule calls: exit status 2, one paragraph on
stderr naming the problem and the fix, no traceback, and nothing written."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch
from conftest import REPO, assert_no_traceback, cli, edited_checkpoint, flat
from fashion_cnn.data.dataset import FILES
from fashion_cnn.models.architectures.resnet18 import resnet18_for_fashion


def _corrupt_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    return path


def _wrong_architecture(tmp_path, checkpoint):
    def edit(state):
        state["model_state"] = resnet18_for_fashion().state_dict()

    return edited_checkpoint(checkpoint, tmp_path / "model.pt", edit)


def _without(key):
    def build(tmp_path, checkpoint):
        return edited_checkpoint(checkpoint, tmp_path / "model.pt", lambda state: state.pop(key))

    return build


def _aggregate_metrics(tmp_path):
    path = tmp_path / "aggregate.txt"  # not .json: nothing a case writes may predate it
    path.write_text('{"test_accuracy_over_seeds": {}, "seeds": [1]}')
    return path


def _seed_metrics(tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text('{"experiment": "cnn_baseline", "test_accuracy": 0.9}')
    return path


def _nan_weights(tmp_path, checkpoint):
    def edit(state):
        state["model_state"]["classifier.1.weight"][0, 0] = float("nan")

    return edited_checkpoint(checkpoint, tmp_path / "model.pt", edit)


def _huge_model(tmp_path, checkpoint):
    def edit(state):  # a cnn_bn a million channels wide would take the node's memory
        state["model"] = {"name": "cnn_bn", "arguments": {"output_softmax": False, "width": 10**6}}

    return edited_checkpoint(checkpoint, tmp_path / "model.pt", edit)


def _evaluate(t, d, checkpoint, *extra):
    return [
        "evaluate-model",
        "--checkpoint",
        checkpoint,
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
        "--scores",
        t / "s.npz",
        *extra,
    ]


def _plot_into(folder, d):
    return ["plot-samples", "--data", d, "--grid", folder / "g.png", "--colorbar", folder / "c.png"]


def _dangling_link(tmp_path):
    link = tmp_path / "scratch-results"
    link.symlink_to(tmp_path / "purged")
    return link


def _link_loop(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    return loop


def _file_in_the_way(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    return tmp_path / "results" / "data"


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


# Each case: (build the command line from tmp_path, Debian mirror, dataset, a real checkpoint;
# words the paragraph must hold).
CASES = {
    "corrupt checkpoint": (
        lambda t, m, d, c: _evaluate(t, d, _corrupt_checkpoint(t)),
        "corrupt or not a PyTorch file",
    ),
    "checkpoint without its model weights": (
        lambda t, m, d, c: _evaluate(t, d, _without("model_state")(t, c)),
        "is incomplete: no 'model_state'",
    ),
    "checkpoint without its training record": (
        lambda t, m, d, c: _evaluate(t, d, _without("progress")(t, c)),
        "is incomplete: no 'progress'",
    ),
    "checkpoint with NaN weights": (
        lambda t, m, d, c: (
            ["plot-filters", "--checkpoint", _nan_weights(t, c)]
            + ["--chapter-figure", t / "f.png", "--layers-figure", t / "l.png"]
        ),
        "hold NaN or infinite values (classifier.1.weight)",
    ),
    "checkpoint asking for an absurd model": (
        lambda t, m, d, c: _evaluate(t, d, _huge_model(t, c)),
        "holds settings no config allows",
    ),
    "robustness on a corrupt checkpoint": (
        lambda t, m, d, c: (
            ["assess-robustness", "--checkpoint", _corrupt_checkpoint(t), "--data", d]
            + ["--output", t / "r.csv"]
        ),
        "corrupt or not a PyTorch file",
    ),
    "robustness on 5 images": (
        lambda t, m, d, c: (
            ["assess-robustness", "--checkpoint", c, "--data", d, "--output", t / "r.csv"]
            + ["--corruption-images", "5"]
        ),
        "argument --corruption-images: 5 is out of range; it must be at least 100",
    ),
    "assessing an experiment from a seed's metrics": (
        lambda t, m, d, c: (
            ["assess-experiment", "--metrics", _seed_metrics(t), "--scores", t / "s.npz"]
            + ["--data", d]
            + [
                value
                for n in ("classification", "robustness", "pairs")
                for value in (f"--{n}-csv", t / f"{n}.csv")
            ]
            + [
                value
                for n in ("robustness", "reliability", "failures")
                for value in (f"--{n}-png", t / f"{n}.png")
            ]
        ),
        "is not a metrics file as this workflow writes it",
    ),
    "evaluation batch size 0": (
        lambda t, m, d, c: _evaluate(t, d, c, "--batch-size", "0"),
        "argument --batch-size: 0 is out of range; it must be at least 1",
    ),
    "unknown device": (
        lambda t, m, d, c: _evaluate(t, d, c, "--device", "tpu"),
        'argument --device: "tpu" has the wrong form',
    ),
    "zero threads": (
        lambda t, m, d, c: _evaluate(t, d, c, "--threads", "0"),
        "argument --threads: 0 is out of range",
    ),
    "infinite download timeout": (
        lambda t, m, d, c: (
            ["download-data", "--folder", t / "raw", "--timeout", "inf"]
            + ["--mirror", m.as_uri() + "/"]
        ),
        "argument --timeout: 'inf' is not a finite number",
    ),
    "NaN in a JSON override": (
        lambda t, m, d, c: _train(
            t,
            d,
            "--experiment",
            "cnn_baseline",
            "--config-json",
            '{"experiments": {"cnn_baseline": {"learning_rate": NaN}}}',
        ),
        "experiments.cnn_baseline.learning_rate = nan is not a finite number",
    ),
    "results folder is a dangling link": (
        lambda t, m, d, c: _plot_into(_dangling_link(t), d),
        "something that is not a folder is in the way",
    ),
    "a results folder that is a link loop": (
        lambda t, m, d, c: _plot_into(_link_loop(t) / "data", d),
        "a symbolic link that leads back to itself",
    ),
    "a file where the results folder belongs": (
        lambda t, m, d, c: _plot_into(_file_in_the_way(t), d),
        "something that is not a folder is in the way",
    ),
    "checkpoint of another architecture": (
        lambda t, m, d, c: [
            "export-onnx",
            "--configfile",
            REPO / "config.yaml",
            "--checkpoint",
            _wrong_architecture(t, c),
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
        lambda t, m, d, c: [
            "prepare-data",
            "--raw-folder",
            _truncated_idx_folder(t, m),
            "--output",
            t / "out.npz",
        ],
        "is truncated",
    ),
    "publish without saying what it measured": (
        lambda t, m, d, c: ["publish", _aggregate_metrics(t), "--as", "x.y", "--ledger", t],
        "an experiment's results need --question, --title, --command",
    ),
    "publish a seed's own metrics": (
        lambda t, m, d, c: [
            "publish",
            _seed_metrics(t),
            "--as",
            "x.y",
            "--question",
            "chapter",
            "--title",
            "t",
            "--command",
            "c",
            "--ledger",
            t,
        ],
        "not an experiment's aggregate metrics.json",
    ),
    "corrupt dataset cache": (
        lambda t, m, d, c: [
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
        lambda t, m, d, c: _train(t, d, "--experiment", "cnn_basline"),
        "No experiment named 'cnn_basline'",
    ),
    "missing config file": (
        lambda t, m, d, c: ["check-config", "--configfile", t / "nope.yaml"],
        "does not exist",
    ),
    "CUDA asked for, none here": (
        lambda t, m, d, c: _train(
            t, d, "--experiment", "cnn_baseline", "--config-json", '{"engine": {"device": "cuda"}}'
        ),
        "sees no CUDA device",
    ),
    # its scheduler gave the job a GPU (the rule asked for one) and PyTorch finds none: a node
    # whose driver is too old for the image's CUDA, or no --nv; never a silent CPU run
    "GPU given, none found": (
        lambda t, m, d, c: _train(t, d, "--experiment", "cnn_baseline", "--expect-gpu"),
        "This job asked for a GPU",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_gives_one_paragraph(
    case, tmp_path, debian_mirror, prepared_data, real_checkpoint
):
    if case in ("CUDA asked for, none here", "GPU given, none found") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    build, expected = CASES[case]
    arguments = build(tmp_path, debian_mirror, prepared_data, real_checkpoint)  # the bad inputs
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
