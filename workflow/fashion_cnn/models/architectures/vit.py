"""Vision transformers: ViT-B/16 (pretrained, the chapter's third exercise) and a small ViT from
scratch for 28x28."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import interpolate_embeddings

from fashion_cnn import NUM_CLASSES
from fashion_cnn.models.registry import MODELS, ModelEntry, PretrainedWeights, option

STATISTICS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "google": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class GreyToImageNet(nn.Module):
    """(N, 1, 28, 28) grey images in [0, 1] -> (N, 3, size, size), normalised as the pretrained
    weights expect (``STATISTICS``): part of the model, so evaluation and the exported ONNX graph
    take the same 28x28 input."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

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

    vit: torchvision.models.VisionTransformer

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


def _with_softmax(model: VisionTransformerFor28, output_softmax: bool) -> nn.Module:
    if output_softmax:
        model.vit.heads = nn.Sequential(*model.vit.heads, nn.Softmax(dim=1))
    return model


def vit_layout(pretrained: dict, model: nn.Module) -> dict:
    """torchvision's ViT-B/16 state_dict (keys ``conv_proj.weight``, ``encoder.…``, 224x224
    position embeddings) in this model's layout: under ``vit.``, the position embeddings
    interpolated (bicubic, torchvision's own function) to the model's image size. A fashion-cnn
    vit_b16 checkpoint (keys already under ``vit.``) passes unchanged."""
    if any(key.startswith("vit.") for key in pretrained):
        return pretrained
    if "encoder.pos_embedding" in pretrained:
        vit = model.vit
        assert isinstance(vit, torchvision.models.VisionTransformer)
        pretrained = interpolate_embeddings(vit.image_size, vit.patch_size, dict(pretrained))
    return {f"vit.{key}": tensor for key, tensor in pretrained.items()}


@dataclass(frozen=True)
class ViTB16Options:
    image_size: int = option(
        224,
        "The 28x28 images are resized to this (224 as pretrained; a smaller multiple of 16 saves "
        "compute, and the pretrained position embeddings are interpolated).",
        minimum=32,
        maximum=512,
        multipleOf=16,
    )


@dataclass(frozen=True)
class ViTSmallOptions:
    width: int = option(
        24,
        f"The width of its tokens, split among its {VIT_SMALL_HEADS} attention heads.",
        minimum=4,
        maximum=256,
        multipleOf=VIT_SMALL_HEADS,
    )
    patch_size: int = option(
        7, "Patches of N x N pixels (7: 16 tokens per image, 4: 49).", enum=[2, 4, 7, 14]
    )


MODELS.add(
    "vit_b16",
    ModelEntry(
        vit_b16_for_fashion,
        "ViT-B/16 (google/vit-base-patch16-224's architecture, see image_size)",
        ViTB16Options,
        takes_dropout=True,
        pretrained=PretrainedWeights(
            "ViT_B_16_Weights",
            frozenset({"vit.heads.0.weight", "vit.heads.0.bias"}),
            layout=vit_layout,
            safetensors_statistics="google",
        ),
    ),
)
MODELS.add(
    "vit_small",
    ModelEntry(
        vit_small_for_fashion,
        "a small ViT from scratch on 28x28 (see width, patch_size)",
        ViTSmallOptions,
        takes_dropout=True,
    ),
)
