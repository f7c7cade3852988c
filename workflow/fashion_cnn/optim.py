"""Optimizers and learning-rate schedules, built from an experiment's settings."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module, experiment: dict) -> torch.optim.Optimizer:
    lr, decay = experiment["learning_rate"], experiment["weight_decay"]
    if experiment["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    if experiment["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=decay
    )


def make_scheduler(optimizer, experiment: dict, total_steps: int):
    schedule = experiment["lr_schedule"]
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=experiment["learning_rate"], total_steps=total_steps
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None
