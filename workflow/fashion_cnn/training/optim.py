"""Optimizers and learning-rate schedules, built from an experiment's settings.

Each is one registry entry (``OPTIMIZERS``, ``SCHEDULES``) that carries its builder and its flags
(fused on a CPU, capturable in a CUDA graph); an experiment's ``optimizer`` and ``lr_schedule``
choose from them, and everything else asks the entry. Adding one is an entry here and a test, and
``make choices`` (the torch-free catalog the config validates with).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fashion_cnn.config.settings import TrainingSettings
from fashion_cnn.core.registry import Registry
from fashion_cnn.training.muon import MuonAdamW


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer choice: its builder, gets (parameters, lr, weight_decay, **options), where
    options hold ``capturable`` when the step is captured in a CUDA graph (lr is then a tensor on
    the device) and ``fused`` on a CPU where ``fused_on_cpu``; and its flags."""

    build: Callable[..., torch.optim.Optimizer]
    description: str
    # PyTorch's fused CPU kernel: one pass per tensor instead of a Python loop of a dozen
    # element-wise kernels (the same fp32 arithmetic; docs/results/notebook.md, "ResNet-18 on this CPU")
    fused_on_cpu: bool = False
    capturable: bool = False  # a capturable implementation: step count and lr on the device


@dataclass(frozen=True)
class ScheduleEntry:
    """One learning-rate schedule: its builder gets (optimizer, training settings, total steps) and
    returns a scheduler stepped every batch, or None for a constant rate."""

    build: Callable[[torch.optim.Optimizer, TrainingSettings, int], Scheduler | None]
    description: str
    # its only change per step is the learning rate, which a CUDA graph reads from a device tensor
    # (OneCycleLR also rewrites Adam's betas as Python numbers, which a graph would freeze)
    graph_safe: bool = False


# what a schedule's builder returns: stepped once per batch
Scheduler = torch.optim.lr_scheduler.LRScheduler
# what an optimizer's builder gets: the model's parameters, and the learning rate as a number or,
# for a step captured in a CUDA graph, as a tensor on the device
Parameters = Iterable[nn.Parameter]
LearningRate = float | torch.Tensor

OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", "optimizer")
SCHEDULES: Registry[ScheduleEntry] = Registry("learning-rate schedule", "lr_schedule")


def adam(
    parameters: Parameters, lr: LearningRate, weight_decay: float, **options: Any
) -> torch.optim.Optimizer:
    """The chapter's optimizer."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, **options)


def adamw(
    parameters: Parameters, lr: LearningRate, weight_decay: float, **options: Any
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **options)


def sgd(
    parameters: Parameters, lr: LearningRate, weight_decay: float, **options: Any
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9."""
    return torch.optim.SGD(
        parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, **options
    )


def muon(
    parameters: Parameters, lr: LearningRate, weight_decay: float, **options: Any
) -> torch.optim.Optimizer:
    """Muon for the convolution filters, AdamW for the rest (fashion_cnn.training.muon)."""
    return MuonAdamW(parameters, lr=float(lr), weight_decay=weight_decay, **options)


def constant(
    optimizer: torch.optim.Optimizer, training: TrainingSettings, total_steps: int
) -> Scheduler | None:
    """The chapter: the learning rate never changes."""
    return None


def onecycle(
    optimizer: torch.optim.Optimizer, training: TrainingSettings, total_steps: int
) -> Scheduler | None:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=training.learning_rate, total_steps=total_steps
    )


def cosine(
    optimizer: torch.optim.Optimizer, training: TrainingSettings, total_steps: int
) -> Scheduler | None:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


OPTIMIZERS.add("adam", OptimizerEntry(adam, "the chapter's", fused_on_cpu=True, capturable=True))
OPTIMIZERS.add(
    "adamw", OptimizerEntry(adamw, "decoupled weight decay", fused_on_cpu=True, capturable=True)
)
OPTIMIZERS.add("sgd", OptimizerEntry(sgd, "momentum 0.9, Nesterov"))
OPTIMIZERS.add("muon", OptimizerEntry(muon, "Muon for the convolution filters, AdamW for the rest"))
SCHEDULES.add("constant", ScheduleEntry(constant, "the chapter: never changes", graph_safe=True))
SCHEDULES.add("onecycle", ScheduleEntry(onecycle, "one cycle up to learning_rate and down"))
SCHEDULES.add("cosine", ScheduleEntry(cosine, "cosine annealing to 0", graph_safe=True))


def make_optimizer(
    model: nn.Module,
    training: TrainingSettings,
    graph_device: torch.device | None = None,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """The experiment's optimizer; for a CUDA-graph step (``graph_device``), capturable with its
    learning rate in a device tensor that schedules fill in place (fashion_cnn.training.graphs); on a
    CPU, Adam and AdamW fused."""
    entry = OPTIMIZERS.get(training.optimizer)
    build = entry.build
    if graph_device is None:
        options = {}
        if device is not None and device.type == "cpu" and entry.fused_on_cpu:
            options["fused"] = True
        return build(
            model.parameters(),
            training.learning_rate,
            training.weight_decay,
            **options,
        )
    lr = torch.tensor(training.learning_rate, device=graph_device)
    return build(model.parameters(), lr, training.weight_decay, capturable=True)


def set_learning_rate_kind(
    optimizer: torch.optim.Optimizer, graph_device: torch.device | None
) -> None:
    """After loading a saved optimizer state: the learning rate as this run steps it (a device
    tensor for a CUDA-graph step, a number otherwise), whichever kind the saved run used."""
    for group in optimizer.param_groups:
        value = float(group["lr"])
        group["lr"] = value if graph_device is None else torch.tensor(value, device=graph_device)


def make_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingSettings, total_steps: int
) -> Scheduler | None:
    return SCHEDULES.get(training.lr_schedule).build(optimizer, training, total_steps)
