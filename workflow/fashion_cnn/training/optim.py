"""Optimizers and learning-rate schedules, built from an experiment's settings.

Each is registered by name (``OPTIMIZERS``, ``SCHEDULES``); an experiment's ``optimizer`` and
``lr_schedule`` choose from them. Adding one is a function here with its decorator and a test;
the config schema's enum is read from the decorators (config.REGISTRY_ENUMS).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.registry import Registry

# A builder gets (parameters, lr, weight_decay, **options); options hold ``capturable`` when the
# step is captured in a CUDA graph (lr is then a tensor on the device).
OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer", "optimizer")
# A schedule builder gets (optimizer, experiment, total steps) and returns a scheduler stepped
# every batch, or None for a constant rate.
SCHEDULES: Registry[Callable] = Registry("learning-rate schedule", "lr_schedule")


@OPTIMIZERS.register("adam")
def adam(parameters, lr, weight_decay: float, **options) -> torch.optim.Optimizer:
    """The chapter's optimizer."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, **options)


@OPTIMIZERS.register("adamw")
def adamw(parameters, lr, weight_decay: float, **options) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **options)


@OPTIMIZERS.register("sgd")
def sgd(parameters, lr, weight_decay: float, **options) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9."""
    return torch.optim.SGD(
        parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, **options
    )


@SCHEDULES.register("constant")
def constant(optimizer, experiment: ExperimentSettings, total_steps: int):
    """The chapter: the learning rate never changes."""
    return None


@SCHEDULES.register("onecycle")
def onecycle(optimizer, experiment: ExperimentSettings, total_steps: int):
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=experiment.learning_rate, total_steps=total_steps
    )


@SCHEDULES.register("cosine")
def cosine(optimizer, experiment: ExperimentSettings, total_steps: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


# Measured (docs/benchmarks.md, "ResNet-18 on this CPU"): on a CPU, PyTorch's default Adam is a
# Python loop of a dozen element-wise kernels per tensor; fused, one pass per tensor. ResNet-18's
# update (11.2M parameters): 55 -> 20 ms per step on an AVX-512 EPYC; the chapter's CNN (167k):
# no difference measured. The same arithmetic, in fp32.
FUSED_ON_CPU = {"adam", "adamw"}


def make_optimizer(
    model: nn.Module,
    experiment: ExperimentSettings,
    graph_device: torch.device | None = None,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """The experiment's optimizer; for a CUDA-graph step (``graph_device``), capturable with its
    learning rate in a device tensor that schedules fill in place (fashion_cnn.training.graphs); on a
    CPU, Adam and AdamW fused."""
    build = OPTIMIZERS.get(experiment.optimizer)
    if graph_device is None:
        options = {}
        if device is not None and device.type == "cpu" and experiment.optimizer in FUSED_ON_CPU:
            options["fused"] = True
        return build(
            model.parameters(), experiment.learning_rate, experiment.weight_decay, **options
        )
    lr = torch.tensor(experiment.learning_rate, device=graph_device)
    return build(model.parameters(), lr, experiment.weight_decay, capturable=True)


def set_learning_rate_kind(optimizer, graph_device: torch.device | None) -> None:
    """After loading a saved optimizer state: the learning rate as this run steps it (a device
    tensor for a CUDA-graph step, a number otherwise), whichever kind the saved run used."""
    for group in optimizer.param_groups:
        value = float(group["lr"])
        group["lr"] = value if graph_device is None else torch.tensor(value, device=graph_device)


def make_scheduler(optimizer, experiment: ExperimentSettings, total_steps: int):
    return SCHEDULES.get(experiment.lr_schedule)(optimizer, experiment, total_steps)
