"""torchvision's ResNet-18 with the chapter's changes, fine-tuned from ImageNet weights."""

from __future__ import annotations

from dataclasses import dataclass

import torchvision
from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.models.registry import MODELS, ModelEntry, PretrainedWeights, option


@dataclass(frozen=True)
class ResNet18Options:
    conv1_init: str = option(
        "random",
        "random (the chapter: a new 1-channel conv1) or mean_rgb (the mean of the pretrained RGB "
        "conv1 filters, keeping what they learned; needs pretrained weights).",
        argument="never",  # read by the weights loader, not the builder
        enum=["random", "mean_rgb"],
    )


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


MODELS.add(
    "resnet18",
    ModelEntry(
        resnet18_for_fashion,
        "torchvision's ResNet-18 (1-channel conv1, 10-way fc)",
        ResNet18Options,
        pretrained=PretrainedWeights(
            "ResNet18_Weights",
            frozenset({"conv1.weight", "fc.weight", "fc.bias", "fc.0.weight", "fc.0.bias"}),
        ),
        filters="first",
    ),
)
