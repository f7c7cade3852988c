"""Building a registered model and looking at it: its builder's arguments for an experiment, the
parameter count, its convolution layers and the chapter's summary table."""

from __future__ import annotations

import torch
from torch import nn

from fashion_cnn.config.settings import ModelSettings
from fashion_cnn.models import architectures  # noqa: F401  (registers every model)
from fashion_cnn.models.registry import MODELS, ModelEntry


def model_entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def model_arguments(settings: ModelSettings) -> dict:
    """The constructor arguments an experiment's model is built with (stored in checkpoints)."""
    return MODELS.get(settings.name).arguments(
        settings.options, settings.output_softmax, settings.dropout, settings.weights
    )


def build_model(name: str, arguments: dict) -> nn.Module:
    return MODELS.get(name).build(**arguments)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)
    ]


def summary_table(model: nn.Module, input_shape=(1, 1, 28, 28)) -> str:
    """Per-layer output shape and parameter count, like the chapter's torchsummary table."""
    rows: list[tuple[str, str, int]] = []
    hooks = []

    def record(name):
        def hook(module, inputs, output):
            shape = list(output.shape) if isinstance(output, torch.Tensor) else "?"
            if isinstance(shape, list):
                shape[0] = -1
            own = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((f"{type(module).__name__} ({name})", str(shape), own))

        return hook

    for name, module in model.named_modules():
        if not list(module.children()):  # leaves only, in execution order
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_shape))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    total = parameter_count(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max(len(row[0]) for row in rows) + 2
    lines = [
        f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>12}",
        "=" * (width + 34),
        *(f"{layer:<{width}}{shape:<22}{params:>12,}" for layer, shape, params in rows),
        "=" * (width + 34),
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    return "\n".join(lines) + "\n"
