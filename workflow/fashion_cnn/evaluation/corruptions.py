"""Corrupted copies of the test images, at three severities, made the same way on every machine.

In the spirit of MNIST-C (Mu & Gilmer 2019, arXiv:1906.02337), which corrupts MNIST's test set
with fixed, seeded transformations, and of ImageNet-C (Hendrycks & Dietterich 2019,
arXiv:1903.12261), whose five severities per corruption we sample at three. Where ImageNet-C
gives a parameter that means the same on 28x28 grey images (noise, contrast, brightness), its
1st, 3rd and 5th severities are used; blur, rotation, translation and occlusion are scaled to
28-pixel images. Occlusion is a Cutout patch (DeVries & Taylor 2017) of background.

Each corruption is one registry entry: a function of (images as floats in [0, 1], one severity's
parameter, a numpy Generator) and its three parameters. The generator is seeded from the
corruption's name and the severity, so the same images come out on every run and machine.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from fashion_cnn.core.registry import Registry

SEVERITIES = (1, 2, 3)
# robustness.csv: one row per corruption and severity; the clean images are corruption "none",
# severity 0
COLUMNS = ["corruption", "severity", "parameter", "unit", "accuracy", "images"]
CLEAN = "none"


@dataclass(frozen=True)
class Corruption:
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    parameters: tuple[float, float, float]  # severity 1, 2, 3
    unit: str  # what the parameter is, for tables and captions


CORRUPTIONS: Registry[Corruption] = Registry("corruption", "assessment")


def _noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return images + rng.normal(0.0, sigma, images.shape)


def _blur(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    # sigma 0 along the image axis: each image blurred on its own
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma), mode="constant")


def _contrast(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    means = images.mean(axis=(1, 2), keepdims=True)
    return (images - means) * factor + means


def _brightness(images: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    return images + shift


def _rotation(images: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Each image turned ``degrees`` one way or the other (at random); the images of each way
    turned in one call (the same result as image by image)."""
    signs = rng.choice([-1.0, 1.0], size=len(images))
    out = np.empty_like(images)
    for sign in (-1.0, 1.0):
        chosen = signs == sign
        out[chosen] = ndimage.rotate(
            images[chosen], sign * degrees, axes=(1, 2), reshape=False, order=1, mode="constant"
        )
    return out


def _translation(images: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    """Each image moved ``pixels`` in a random direction (rounded to whole pixels), zeros in."""
    angles = rng.uniform(0, 2 * np.pi, size=len(images))
    steps = np.rint(pixels * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(int)
    pad = int(pixels)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    height, width = images.shape[1:]
    out = np.empty_like(images)
    for index, (dx, dy) in enumerate(steps):
        out[index] = padded[index, pad - dy : pad - dy + height, pad - dx : pad - dx + width]
    return out


def _occlusion(images: np.ndarray, side: float, rng: np.random.Generator) -> np.ndarray:
    """A square of background (zeros) of ``side`` pixels at a random place inside each image."""
    size = int(side)
    height, width = images.shape[1:]
    tops = rng.integers(0, height - size + 1, size=len(images))
    lefts = rng.integers(0, width - size + 1, size=len(images))
    out = images.copy()
    for index, (top, left) in enumerate(zip(tops, lefts, strict=True)):
        out[index, top : top + size, left : left + size] = 0.0
    return out


CORRUPTIONS.add("gaussian_noise", Corruption(_noise, (0.08, 0.18, 0.38), "noise std"))
CORRUPTIONS.add("blur", Corruption(_blur, (0.5, 1.0, 1.5), "Gaussian std, pixels"))
CORRUPTIONS.add("contrast", Corruption(_contrast, (0.4, 0.2, 0.05), "contrast factor"))
CORRUPTIONS.add("brightness", Corruption(_brightness, (0.1, 0.3, 0.5), "added brightness"))
CORRUPTIONS.add("rotation", Corruption(_rotation, (15.0, 30.0, 45.0), "degrees"))
CORRUPTIONS.add("translation", Corruption(_translation, (2.0, 4.0, 6.0), "pixels"))
CORRUPTIONS.add("occlusion", Corruption(_occlusion, (6.0, 10.0, 14.0), "square side, pixels"))


def corrupt(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    """uint8 images (N, 28, 28) with the corruption at severity 1, 2 or 3, as uint8; the same
    output for the same input on every run (a generator seeded from the name and severity)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of {SEVERITIES}")
    corruption = CORRUPTIONS.get(name)
    rng = np.random.default_rng([zlib.crc32(name.encode()), severity])
    floats = images.astype(np.float64) / 255.0
    changed = corruption.apply(floats, corruption.parameters[severity - 1], rng)
    return np.rint(np.clip(changed, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_robustness(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [
            {**r, "severity": int(r["severity"]), "accuracy": float(r["accuracy"])}
            for r in csv.DictReader(handle)
        ]


def mean_corrupted_accuracy(rows: list[dict]) -> float:
    """The mean accuracy over every corruption and severity (the clean row left out)."""
    return float(np.mean([r["accuracy"] for r in rows if r["corruption"] != CLEAN]))
