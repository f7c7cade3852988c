"""Muon for the convolution filters, AdamW for every other parameter: one optimizer, one learning
rate, one weight decay.

Muon (Keller Jordan, 2024, https://kellerjordan.github.io/posts/muon/) takes SGD's Nesterov momentum
and, before the step, replaces each filter bank's update by its nearest semi-orthogonal matrix (all
singular values near 1), found with a few Newton-Schulz iterations; the CIFAR-10 speed-runs
(airbench94_muon) reach 94% in fewer steps with it. PyTorch's own ``torch.optim.Muon`` takes 2-D
parameters only, so a convolution's (out, in, kh, kw) filters are flattened to (out, in*kh*kw) here,
as airbench does. Biases, BatchNorm's scales and shifts and the classifier stay with AdamW, as the
Muon authors advise.

The update is scaled by 0.2 * sqrt(max(rows, cols)) (Moonshot AI's "Muon is scalable", 2025; the
``match_rms_adamw`` option of ``torch.optim.Muon``) so that its size matches AdamW's: an experiment's
``learning_rate``, schedule and decoupled ``weight_decay`` then mean the same for both halves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
from torch import nn
from torch.optim.adamw import adamw  # the functional form, a public API

# the quintic's coefficients, chosen for the steepest slope at zero (Jordan, 2024): five steps
# take every singular value of a random update into about (0.68, 1.21) (tests/test_muon.py); one
# under about 1/500 of the matrix's norm (a direction the update hardly has) grows at most
# 3.4445**5, about 490 times, and stays below that band
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalise(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The matrix ``update`` (2-D) with its singular values moved near 1 and its singular vectors
    kept: Newton-Schulz iterations on the wide orientation, in fp32."""
    a, b, c = NEWTON_SCHULZ
    x = update.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)  # every singular value at most 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """Muon on every 4-D parameter (the convolution filters), AdamW on the rest; groups carry
    ``muon`` to say which. The state dict is an ordinary optimizer's, so a run resumes exactly."""

    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        parameters = list(parameters)
        groups = [
            {"params": [p for p in parameters if p.ndim == 4], "muon": True},
            {"params": [p for p in parameters if p.ndim != 4], "muon": False},
        ]
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "betas": betas,
            "eps": 1e-8,
            "steps": 5,
        }
        super().__init__([group for group in groups if group["params"]], defaults)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step; ``closure``, as for every PyTorch optimizer, recomputes and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if not group["muon"]:
                self._adamw_step(group)
                continue
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled decay
                    self._muon_step(parameter, parameter.grad, group)
        return loss

    def _muon_step(
        self, parameter: nn.Parameter, grad: torch.Tensor, group: dict[str, Any]
    ) -> None:
        momentum = group["momentum"]
        state = self.state[parameter]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buffer = state["momentum_buffer"]
        buffer.lerp_(grad, 1 - momentum)
        nesterov = grad.lerp(buffer, momentum)
        update = orthogonalise(nesterov.reshape(len(nesterov), -1), group["steps"])
        scale = 0.2 * max(update.shape) ** 0.5
        parameter.add_(update.view_as(parameter).to(parameter.dtype), alpha=-group["lr"] * scale)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        """PyTorch's own AdamW arithmetic (its functional form) on the group's parameters, with
        the state ``torch.optim.AdamW`` keeps."""
        parameters = [p for p in group["params"] if p.grad is not None]
        for parameter in parameters:
            state = self.state[parameter]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(parameter)
                state["exp_avg_sq"] = torch.zeros_like(parameter)
        states = [self.state[p] for p in parameters]
        beta1, beta2 = group["betas"]
        adamw(
            parameters,
            [p.grad for p in parameters],
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
