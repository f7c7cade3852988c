"""Model definitions, built by name from arguments a checkpoint carries."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from fashion_cnn.registry import Registry
from fashion_cnn.settings import ExperimentSettings

NUM_CLASSES = 10
# Every model an experiment's `model` can name, built from the arguments a checkpoint carries.
# Adding one: a class or builder here under @MODELS.register("name") and a test in
# tests/test_models.py; the config schema's enum is read from these decorators (config.py).
MODELS: Registry = Registry("model", "model")


@MODELS.register("cnn")
class ChapterCNN(nn.Module):
    """The chapter's CNN: conv 32/64/128 3x3 + ReLU, 2x2 max-pool after the first two, fc 64, fc 10.

    ``output_softmax`` ends the network with Softmax as the chapter does (then CrossEntropyLoss
    applies softmax a second time); the default returns logits.
    """

    def __init__(self, output_softmax: bool = False, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, kernel_size=3),
            nn.ReLU(),
        )
        head = [nn.Flatten(), nn.Linear(128 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, num_classes)]
        if output_softmax:
            head.append(nn.Softmax(dim=1))
        self.classifier = nn.Sequential(*head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def _conv_bn(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


@MODELS.register("cnn_bn")
class BatchNormCNN(nn.Module):
    """A small VGG-style CNN with BatchNorm for the fast recipe (``cnn_fast``).

    One 3x3 conv-BN-ReLU block at 28x28, two at 14x14 and two at 7x7 (``width``, 2x and 4x
    channels), max-pool between stages, global max pooling and one linear layer. Cheap where the
    images are large, wide where they are small. As ``cnn_fast`` (width 32, bf16 autocast, batch
    256) it trained at 1,963 images/s on 2 CPU cores (README, "Results").
    """

    def __init__(
        self, width: int = 24, output_softmax: bool = False, num_classes: int = NUM_CLASSES
    ):
        super().__init__()
        w1, w2, w3 = width, width * 2, width * 4
        self.features = nn.Sequential(
            *_conv_bn(1, w1),
            nn.MaxPool2d(2),
            *_conv_bn(w1, w2),
            *_conv_bn(w2, w2),
            nn.MaxPool2d(2),
            *_conv_bn(w2, w3),
            *_conv_bn(w3, w3),
        )
        head = [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes)]
        if output_softmax:
            head.append(nn.Softmax(dim=1))
        self.classifier = nn.Sequential(*head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


@MODELS.register("resnet18")
def resnet18_for_fashion(output_softmax: bool = False) -> nn.Module:
    """torchvision's ResNet-18 with a 1-channel conv1 and a 10-way fc (the chapter's changes)."""
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    if output_softmax:
        model.fc = nn.Sequential(model.fc, nn.Softmax(dim=1))
    return model


class OnePixelConv2d(nn.Conv2d):
    """A Conv2d that computes a one-pixel output as the matrix product it is.

    When the kernel window of the only output pixel covers the whole input (ResNet-18's last
    stage at 28x28: 3x3 kernels, padding 1, on 1x1 maps, and the stride-2 one on 2x2 maps), the
    convolution is ``input (N, C*H*W) @ the taps that see the input (C*H*W, C_out)``; the other
    taps see only zero padding, so they add nothing and their gradient is exactly zero, as in the
    convolution. Same arithmetic, other order: oneDNN's convolution backward reaches 7 GFLOP/s on
    these shapes on a 2-core EPYC, its matrix product about 70 (docs/benchmarks.md). Any other
    input goes through the convolution. The weights and state_dict are the Conv2d's.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        (k_h, k_w), (s_h, s_w) = self.kernel_size, self.stride
        padding = self.padding
        if (
            isinstance(padding, tuple)
            and self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and padding[0] + height <= k_h
            and padding[1] + width <= k_w
            and (height + 2 * padding[0] - k_h) // s_h == 0
            and (width + 2 * padding[1] - k_w) // s_w == 0
        ):
            taps = self.weight[
                :, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width
            ]
            outputs = nn.functional.linear(
                images.reshape(len(images), -1), taps.reshape(self.out_channels, -1), self.bias
            )
            return outputs.reshape(len(images), self.out_channels, 1, 1)
        return super().forward(images)


def one_pixel_convolutions_as_matmuls(model: nn.Module) -> int:
    """Make every plain Conv2d of ``model`` an OnePixelConv2d (in place); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = OnePixelConv2d
            count += 1
    return count


def model_arguments(experiment: ExperimentSettings) -> dict:
    """The constructor arguments an experiment's model is built with (stored in checkpoints)."""
    arguments = {"output_softmax": bool(experiment.output_softmax)}
    if experiment.model == "cnn_bn":
        arguments["width"] = int(experiment.width)
    return arguments


def build_model(name: str, arguments: dict) -> nn.Module:
    return MODELS.get(name)(**arguments)


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
