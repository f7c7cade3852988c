"""Model definitions, built by name from arguments a checkpoint carries."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.registry import Registry

NUM_CLASSES = 10
# Every model an experiment's `model` can name, built from the arguments a checkpoint carries.
# Adding one: a class or builder here under @MODELS.register("name") and a test in
# tests/test_models.py; the config schema's enum is read from these decorators (config.py).
MODELS: Registry = Registry("model", "model")


class _Dropout:
    """Dropout without a layer of its own in the state_dict, so weights trained with and without
    it load into each other: ``dropout`` before each fully connected layer (``classifier``), after
    each pooling stage as channel dropout (``features``), or both. Identity in eval mode (and in
    the exported ONNX graph)."""

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


@MODELS.register("cnn")
class ChapterCNN(_Dropout, nn.Module):
    """The chapter's CNN: conv 32/64/128 3x3 + ReLU, 2x2 max-pool after the first two, fc 64, fc 10.

    ``output_softmax`` ends the network with Softmax as the chapter does (then CrossEntropyLoss
    applies softmax a second time); the default returns logits. ``dropout``: the chapter's second
    exercise (see ``_Dropout``); 0 is the chapter's network.
    """

    def __init__(
        self,
        output_softmax: bool = False,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.0,
        dropout_place: str = "classifier",
    ):
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
        self._init_dropout(dropout, dropout_place)


def _conv_bn(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


@MODELS.register("cnn_bn")
class BatchNormCNN(_Dropout, nn.Module):
    """A small VGG-style CNN with BatchNorm for the fast recipe (``cnn_fast``).

    One 3x3 conv-BN-ReLU block at 28x28, two at 14x14 and two at 7x7 (``width``, 2x and 4x
    channels), max-pool between stages, global max pooling and one linear layer. Cheap where the
    images are large, wide where they are small. As ``cnn_fast`` (width 32, bf16 autocast, batch
    256) it trained at 1,963 images/s on 2 CPU cores (README, "Results").
    """

    def __init__(
        self,
        width: int = 24,
        output_softmax: bool = False,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.0,
        dropout_place: str = "classifier",
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
        self._init_dropout(dropout, dropout_place)


class _Residual(nn.Module):
    """x + two 3x3 conv-BN-ReLU layers of x (the same channels and size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(channels, channels), *_conv_bn(channels, channels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.body(images)


@MODELS.register("resnet_small")
class SmallResNet(nn.Module):
    """A residual network sized for 28x28 (the layout of Page's ResNet-9 for CIFAR-10, "How to
    train your ResNet", 2018): a 3x3 conv-BN-ReLU of ``width`` channels at 28x28; then three
    stages, each a conv-BN-ReLU that doubles the channels and a 2x2 max-pool (14x14, 7x7, 3x3),
    the first and last followed by a residual block of two conv-BN-ReLU layers; global max
    pooling and one linear layer. Width 16: 8 convolutions, 17 million multiply-adds per image
    (``cnn_bn`` at width 32: 5 and 22 million)."""

    def __init__(
        self, width: int = 16, output_softmax: bool = False, num_classes: int = NUM_CLASSES
    ):
        super().__init__()
        w1, w2, w3, w4 = width, width * 2, width * 4, width * 8
        self.features = nn.Sequential(
            *_conv_bn(1, w1),
            *_conv_bn(w1, w2),
            nn.MaxPool2d(2),
            _Residual(w2),
            *_conv_bn(w2, w3),
            nn.MaxPool2d(2),
            *_conv_bn(w3, w4),
            nn.MaxPool2d(2),
            _Residual(w4),
        )
        head = [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w4, num_classes)]
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


# The per-channel statistics a pretrained ViT-B/16 saw: ImageNet's for torchvision's weights,
# 0.5 and 0.5 (pixels in [-1, 1]) for Google's own checkpoint.
STATISTICS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "google": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class GreyToImageNet(nn.Module):
    """(N, 1, 28, 28) grey images in [0, 1] -> (N, 3, size, size), normalised as the pretrained
    weights expect (``STATISTICS``): part of the model, so evaluation and the exported ONNX graph
    take the same 28x28 input."""

    def __init__(self, image_size: int, statistics: str = "imagenet"):
        super().__init__()
        self.image_size = image_size
        mean, std = STATISTICS[statistics]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = nn.functional.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std


class VisionTransformerFor28(nn.Module):
    """A torchvision VisionTransformer behind a stem (``stem``) that fits its input, with a 10-way
    head; the ViT's keys sit under ``vit.`` as in torchvision's state_dict (see weights.py)."""

    def __init__(self, stem: nn.Module, vit: torchvision.models.VisionTransformer, dropout: float):
        super().__init__()
        self.stem = stem
        self.vit = vit
        self.dropout_classifier = nn.Dropout(dropout) if dropout else None
        self.vit.heads = nn.Sequential(nn.Linear(vit.hidden_dim, NUM_CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        tokens = vit._process_input(self.stem(images))
        tokens = torch.cat([vit.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        features = vit.encoder(tokens)[:, 0]
        if self.dropout_classifier is not None:
            features = self.dropout_classifier(features)
        return vit.heads(features)


@MODELS.register("vit_b16")
def vit_b16_for_fashion(
    image_size: int = 224,
    dropout: float = 0.0,
    output_softmax: bool = False,
    statistics: str = "imagenet",
) -> nn.Module:
    """ViT-B/16, the architecture of google/vit-base-patch16-224 (torchvision's ``vit_b_16``): grey
    images repeated to 3 channels, resized to ``image_size`` (224 as pretrained; smaller saves
    compute, the position embeddings are then interpolated when pretrained weights load), a new
    10-way head. The chapter's third exercise; about 17.6 GFLOP per 224x224 image forward.
    ``statistics``: the normalisation the weights were trained with (google for Google's own
    checkpoint, read from a .safetensors file)."""
    vit = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        dropout=dropout,
    )
    model = VisionTransformerFor28(GreyToImageNet(image_size, statistics), vit, dropout)
    return _with_softmax(model, output_softmax)


# ViT from scratch for 28x28: depth and heads fixed, the token width set by the experiment.
VIT_SMALL_LAYERS = 6
VIT_SMALL_HEADS = 4


@MODELS.register("vit_small")
def vit_small_for_fashion(
    width: int = 64, patch_size: int = 7, dropout: float = 0.0, output_softmax: bool = False
) -> nn.Module:
    """A small ViT trained from scratch on 28x28 grey images: patches of ``patch_size`` pixels
    (7: 16 tokens, 4: 49 tokens), ``width``-wide tokens, 6 encoder layers of 4 heads, MLP 2x."""
    vit = torchvision.models.VisionTransformer(
        image_size=28,
        patch_size=patch_size,
        num_layers=VIT_SMALL_LAYERS,
        num_heads=VIT_SMALL_HEADS,
        hidden_dim=width,
        mlp_dim=2 * width,
        dropout=dropout,
    )
    vit.conv_proj = nn.Conv2d(1, width, kernel_size=patch_size, stride=patch_size)
    model = VisionTransformerFor28(nn.Identity(), vit, dropout)
    return _with_softmax(model, output_softmax)


def _with_softmax(model: nn.Module, output_softmax: bool) -> nn.Module:
    if output_softmax:
        model.vit.heads = nn.Sequential(*model.vit.heads, nn.Softmax(dim=1))
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
    if experiment.model in ("cnn_bn", "resnet_small", "vit_small"):
        arguments["width"] = int(experiment.width)
    if experiment.model == "vit_small":
        arguments["patch_size"] = int(experiment.patch_size)
    if experiment.model == "vit_b16":
        arguments["image_size"] = int(experiment.image_size)
        if experiment.weights.endswith(".safetensors"):  # Google's checkpoint (weights.py)
            arguments["statistics"] = "google"
    if experiment.dropout:  # absent when 0, so checkpoints without dropout keep their arguments
        arguments["dropout"] = float(experiment.dropout)
        if experiment.model in ("cnn", "cnn_bn"):
            arguments["dropout_place"] = experiment.dropout_place
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
