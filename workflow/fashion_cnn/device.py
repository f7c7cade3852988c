"""Where training runs and how: the device, and the engine switches (channels_last, bf16, compile).

Device and precision are passed in from the config, never decided at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fashion_cnn.errors import UserError
from fashion_cnn.settings import EngineSettings

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU (logged). An explicit CUDA request must be met."""
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            log.info("device auto: CUDA is available, using %s", torch.cuda.get_device_name(device))
            return device
        log.info("device auto: no CUDA device, falling back to cpu")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"engine.device is '{spec}' but PyTorch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Use device: auto or "
                "cpu, or run on a GPU node (in the container, with --nv)."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"engine.device is '{spec}' but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    return device


@dataclass(frozen=True)
class Switches:
    channels_last: bool
    bf16: bool
    compile: bool

    @classmethod
    def resolve(cls, engine: EngineSettings, precision: str = "engine") -> Switches:
        """The engine's switches; an experiment may set its own ``precision``. The measured
        defaults are the same on CPU and CUDA (docs/benchmarks.md), so the device is no input."""

        def choose(value, automatic):
            return automatic if value == "auto" else bool(value)

        if precision == "engine":
            precision = engine.precision
        return cls(
            # measured: the chapter's CNN trains 1.42x faster channels_last on CPU (oneDNN) and
            # 1.10x on an H100; ResNet-18 the same within noise on both
            channels_last=choose(engine.channels_last, True),
            # measured: at the chapter's batch 64, bf16 autocast is slower on an H100 (its casts add
            # launches to a launch-bound step) and changes the chapter's numerics on CPU; opt in
            bf16=precision == "bf16",
            # measured: no consistent gain on CPU or H100 at batch 64
            compile=choose(engine.compile, False),
        )
