"""The chapter's CNN and two faster CNNs sized for 28x28: a BatchNorm CNN and a small ResNet."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fashion_cnn import NUM_CLASSES
from fashion_cnn.models.layers import DropoutMixin, Residual, conv_bn
from fashion_cnn.models.registry import MODELS, ModelEntry, option

DROPOUT_PLACE = option(
    "classifier",
    "Where dropout acts: classifier (before each fully connected layer), features (channel "
    "dropout after each pooling stage and the last conv block), or both.",
    argument="with_dropout",
    enum=["classifier", "features", "both"],
)
WIDTH = option(
    24, "Channels of the first stage (the later stages have 2x, 4x, 8x).", minimum=4, maximum=256
)


@dataclass(frozen=True)
class ChapterCNNOptions:
    dropout_place: str = DROPOUT_PLACE


@dataclass(frozen=True)
class BatchNormCNNOptions:
    width: int = WIDTH
    dropout_place: str = DROPOUT_PLACE


@dataclass(frozen=True)
class SmallResNetOptions:
    width: int = WIDTH


class ChapterCNN(DropoutMixin, nn.Module):
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


class BatchNormCNN(DropoutMixin, nn.Module):
    """A small VGG-style CNN with BatchNorm for the fast recipe (``cnn_fast``).

    One 3x3 conv-BN-ReLU block at 28x28, two at 14x14 and two at 7x7 (``width``, 2x and 4x
    channels), max-pool between stages, global max pooling and one linear layer. Cheap where the
    images are large, wide where they are small. ``cnn_fast`` trains it (width 32, bf16 autocast,
    batch 256; measured: docs/results/notebook.md, "cnn_fast: the best recipe for 3 minutes").
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
            *conv_bn(1, w1),
            nn.MaxPool2d(2),
            *conv_bn(w1, w2),
            *conv_bn(w2, w2),
            nn.MaxPool2d(2),
            *conv_bn(w2, w3),
            *conv_bn(w3, w3),
        )
        head = [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes)]
        if output_softmax:
            head.append(nn.Softmax(dim=1))
        self.classifier = nn.Sequential(*head)
        self._init_dropout(dropout, dropout_place)


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
            *conv_bn(1, w1),
            *conv_bn(w1, w2),
            nn.MaxPool2d(2),
            Residual(w2),
            *conv_bn(w2, w3),
            nn.MaxPool2d(2),
            *conv_bn(w3, w4),
            nn.MaxPool2d(2),
            Residual(w4),
        )
        head = [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w4, num_classes)]
        if output_softmax:
            head.append(nn.Softmax(dim=1))
        self.classifier = nn.Sequential(*head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


MODELS.add(
    "cnn",
    ModelEntry(
        ChapterCNN,
        "the chapter's CNN (conv 32/64/128, fc 64, fc 10)",
        ChapterCNNOptions,
        takes_dropout=True,
    ),
)
MODELS.add(
    "cnn_bn",
    ModelEntry(
        BatchNormCNN,
        "a small BatchNorm CNN (see width)",
        BatchNormCNNOptions,
        takes_dropout=True,
    ),
)
MODELS.add(
    "resnet_small",
    ModelEntry(
        SmallResNet,
        "a residual network sized for 28x28 (ResNet-9's layout, see width)",
        SmallResNetOptions,
    ),
)
