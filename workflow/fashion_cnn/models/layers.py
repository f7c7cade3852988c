"""Building blocks the architectures share: dropout that leaves the state_dict alone, the
conv-BN-ReLU block, the residual block, and the one-pixel convolution computed as a matrix
product."""

from __future__ import annotations

import torch
from torch import nn


class DropoutMixin:
    """Dropout without a layer of its own in the state_dict, so weights trained with and without
    it load into each other: ``dropout`` before each fully connected layer (``classifier``), after
    each pooling stage as channel dropout (``features``), or both. Identity in eval mode (and in
    the exported ONNX graph)."""

    features: nn.Sequential  # the model's own stages, which the mixin's dropout goes between
    classifier: nn.Sequential

    def _init_dropout(self, dropout: float, dropout_place: str) -> None:
        classifier = dropout if dropout_place in ("classifier", "both") else 0.0
        features = dropout if dropout_place in ("features", "both") else 0.0
        # modules without parameters or buffers: the summary table lists them where they act
        self.dropout_classifier = nn.Dropout(classifier) if classifier else None
        self.dropout_features = nn.Dropout2d(features) if features else None

    def _run(self, stages: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
        for layer in stages:
            if isinstance(layer, nn.Linear) and self.dropout_classifier is not None:
                images = self.dropout_classifier(images)
            images = layer(images)
            if isinstance(layer, nn.MaxPool2d) and self.dropout_features is not None:
                images = self.dropout_features(images)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self._run(self.features, images)
        if self.dropout_features is not None:
            features = self.dropout_features(features)
        return self._run(self.classifier, features)


def conv_bn(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


class Residual(nn.Module):
    """x + two 3x3 conv-BN-ReLU layers of x (the same channels and size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels), *conv_bn(channels, channels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.body(images)


class _Taps(torch.autograd.Function):
    """The weight's taps in one window, as a (C_out, C_in x height x width) matrix; backward
    gives the whole weight's gradient (zero outside the window) in the weight's own memory
    format. Slicing does the same arithmetic, but its backward writes a contiguous gradient that
    autograd then copies into a channels_last weight's layout: a strided copy of the whole
    weight per layer and step (ResNet-18's 512x512x3x3 taps: 2.5 ms each on 2 cores)."""

    @staticmethod
    def forward(ctx, weight, window: tuple[int, int, int, int]):
        top, left, height, width = ctx.window = window
        ctx.like = (weight.shape, weight.dtype, weight.device)
        ctx.layout = (
            torch.channels_last
            if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        return weight[:, :, top : top + height, left : left + width].reshape(len(weight), -1)

    @staticmethod
    def backward(ctx, grad):
        top, left, height, width = ctx.window
        shape, dtype, device = ctx.like
        whole = torch.empty(shape, dtype=dtype, device=device, memory_format=ctx.layout).zero_()
        window = whole[:, :, top : top + height, left : left + width]
        window.copy_(grad.reshape(shape[0], shape[1], height, width))
        return whole, None


class OnePixelConv2d(nn.Conv2d):
    """A Conv2d that computes a one-pixel output as the matrix product it is.

    When the kernel window of the only output pixel covers the whole input (ResNet-18's last
    stage at 28x28: 3x3 kernels, padding 1, on 1x1 maps, and the stride-2 one on 2x2 maps), the
    convolution is ``input (N, C*H*W) @ the taps that see the input (C*H*W, C_out)``; the other
    taps see only zero padding, so they add nothing and their gradient is exactly zero, as in the
    convolution. Same arithmetic, other order: oneDNN's convolution backward reaches a tenth of
    the matrix product's rate on these shapes (docs/results/notebook.md, "ResNet-18 on this CPU:
    where the time went"); the taps' gradient is written in the weight's own layout (``_Taps``).
    Any other input goes through the convolution. The weights and state_dict are the Conv2d's.
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
            taps = _Taps.apply(self.weight, (padding[0], padding[1], height, width))
            outputs = nn.functional.linear(images.reshape(len(images), -1), taps, self.bias)
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
