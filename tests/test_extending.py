"""The proof that a choice is one registry entry: in a copy of this checkout, a new model with two
options (a small MLP: hidden, depth) is one new module and a new optimizer with its flags is one
entry in training/optim.py, each followed by `make choices` (which regenerates the catalog, no file
edited by hand), as the README's "Contributing" section says. Then the config accepts them and
refuses a bad option value in one paragraph, a sweep over one option plans its jobs, and the real
workflow trains, evaluates, draws the (documented) absence of filters and exports to ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_traceback, copy_checkout, flat, snakemake_command

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

MLP_MODULE = '''"""A small multilayer perceptron."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.models.registry import MODELS, ModelEntry, option


@dataclass(frozen=True)
class MLPOptions:
    hidden: int = option(64, "Units in each hidden layer.", minimum=1, maximum=4096)
    depth: int = option(1, "Hidden layers.", minimum=1, maximum=8)


def mlp(hidden: int = 64, depth: int = 1, output_softmax: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, NUM_CLASSES))
    if output_softmax:
        layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers)


MODELS.add("mlp", ModelEntry(mlp, "a small MLP (see hidden, depth)", MLPOptions, filters="none"))
'''

OPTIMIZER_ENTRY = """

def rmsprop(parameters, lr, weight_decay: float, **options) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(parameters, lr=lr, weight_decay=weight_decay, **options)


OPTIMIZERS.add("rmsprop", OptimizerEntry(rmsprop, "RMSprop", capturable=True))
"""

CONFIG = """
run_experiments: [mlp_small]
comparisons: []
data:
  mirrors: [file:///usr/share/datasets/fashion-mnist/]
export:
  latency_repeats: 5
  parity_images: 500
assessment:
  temperature_images: 500
  corruption_images: 200
experiments:
  mlp_small:
    model: mlp
    hidden: 32
    depth: 2
    optimizer: rmsprop
    train_subset: 300
    epochs: 1
sweeps:
  mlp_hidden:
    experiment: mlp_small
    grid:
      hidden: [16, 32]
    seeds: [42]
"""


@pytest.fixture(scope="module")
def extended(tmp_path_factory, debian_mirror) -> tuple[Path, dict]:
    """A copy of the checkout with the MLP and RMSprop added the documented way."""
    copy = copy_checkout(tmp_path_factory.mktemp("extended") / "repo")
    package = copy / "workflow" / "fashion_cnn"
    (package / "models" / "architectures" / "mlp.py").write_text(MLP_MODULE)
    optim = package / "training" / "optim.py"
    optim.write_text(optim.read_text() + OPTIMIZER_ENTRY)
    env = dict(os.environ, PYTHONPATH=str(copy / "workflow"))
    before = (copy / "workflow" / "schemas" / "choices.json").read_text()
    result = _cli(copy, env, "choices")  # what `make choices` runs
    assert result.returncode == 0, result.stderr
    assert (copy / "workflow" / "schemas" / "choices.json").read_text() != before
    (copy / "extended.yaml").write_text(CONFIG)
    return copy, env


def _cli(copy: Path, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fashion_cnn", *args],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _snakemake(copy: Path, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *snakemake_command(),
            "--snakefile",
            str(copy / "Snakefile"),
            "--directory",
            str(copy),
            "--configfile",
            str(copy / "config.yaml"),
            str(copy / "extended.yaml"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _check_config(extended, experiments: dict | None = None) -> subprocess.CompletedProcess:
    copy, env = extended
    override = ["--config-json", json.dumps({"experiments": experiments})] if experiments else []
    files = ["--configfile", "config.yaml", "extended.yaml"]
    return _cli(copy, env, "check-config", *files, *override)


def test_the_config_accepts_the_new_choices_and_refuses_a_bad_option(extended):
    good = _check_config(extended)
    assert good.returncode == 0, good.stderr
    bad = _check_config(extended, {"mlp_small": {"depth": 0}})
    assert bad.returncode == 2
    assert_no_traceback(bad.stderr)
    assert "experiments.mlp_small.depth = 0 is out of range" in flat(bad.stderr)
    foreign = _check_config(extended, {"cnn_baseline": {"hidden": 128}})
    assert foreign.returncode == 2
    assert "hidden = 128 is an option of mlp; model cnn has no such option" in flat(foreign.stderr)


def test_a_sweep_over_one_option_plans_its_jobs(extended):
    copy, env = extended
    result = _snakemake(copy, env, "--dry-run", "--config", "run_sweeps=[mlp_hidden]")
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    for point in ("hidden=16", "hidden=32"):
        assert f"sweeps/mlp_hidden/{point}/seed-42/model.pt" in plan


def test_the_workflow_trains_evaluates_draws_and_exports_the_new_model(extended):
    copy, env = extended
    targets = [
        f"results/mlp_small/{name}"
        for name in ("metrics.json", "filters.png", "model.onnx", "onnx_check.json")
    ]
    result = _snakemake(copy, env, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((copy / "results/mlp_small/metrics.json").read_text())
    assert metrics["config"]["model"] == "mlp" and metrics["config"]["hidden"] == 32
    assert metrics["config"]["optimizer"] == "rmsprop"
    assert metrics["test_accuracy_over_seeds"]["mean"] > 0.3  # 300 images, one epoch: it learned
    check = json.loads((copy / "results/mlp_small/onnx_check.json").read_text())
    assert check["parity"]["passed"] and check["parity"]["identical_predictions"] == 500
    assert (copy / "results/mlp_small/filters.png").stat().st_size > 1000
