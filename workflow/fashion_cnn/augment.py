"""Named augmentation presets, applied to whole batches on the training device.

Each image of a batch gets its own random flip, rotation and resized crop, as torchvision's
per-image transforms would give it, but all of them are folded into one affine matrix per image and
applied with a single ``grid_sample`` call: no per-sample Python in the training loop.

``torchvision_transform`` gives the same policy as the chapter writes it (PIL transforms, one image
at a time) for the reference DataLoader pipeline and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Policy:
    flip_probability: float = 0.0
    max_rotation_degrees: float = 0.0
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def is_identity(self) -> bool:
        return (
            self.flip_probability == 0
            and self.max_rotation_degrees == 0
            and self.crop_scale is None
        )


PRESETS = {
    "none": Policy(),
    # The chapter: RandomHorizontalFlip(), RandomRotation(10), RandomResizedCrop(28, scale=(0.9, 1)).
    "chapter": Policy(flip_probability=0.5, max_rotation_degrees=10, crop_scale=(0.9, 1.0)),
    "flip": Policy(flip_probability=0.5),
    "flip_crop": Policy(flip_probability=0.5, crop_scale=(0.75, 1.0)),
}


def get_policy(name: str) -> Policy:
    return PRESETS[name]


def _uniform(low, high, count, generator, device):
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


CROP_ATTEMPTS = 10


def _crop_sizes(policy: Policy, count: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Width and height of each crop as fractions of the image (torchvision's sampling rule)."""
    shape = (count, CROP_ATTEMPTS)
    low, high = policy.crop_scale
    area = low + (high - low) * torch.rand(shape, generator=generator, device=device)
    log_low, log_high = (math.log(r) for r in policy.crop_ratio)
    ratio = torch.exp(
        log_low + (log_high - log_low) * torch.rand(shape, generator=generator, device=device)
    )
    width, height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    fits = (width <= 1) & (height <= 1)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting candidate
    any_fits = fits.any(dim=1)
    width = torch.where(
        any_fits, width.gather(1, first).squeeze(1), torch.ones_like(any_fits, dtype=width.dtype)
    )
    height = torch.where(
        any_fits, height.gather(1, first).squeeze(1), torch.ones_like(any_fits, dtype=height.dtype)
    )
    return width, height


def affine_matrices(
    policy: Policy, count: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """One 2x3 sampling matrix per image, in ``affine_grid``'s normalised coordinates.

    The output pixel p is read from the input at ``Flip · Rotation · (Scale · p + Shift)``: the
    resized crop picks a window of the rotated image, and the rotated image is the flipped image
    turned by the angle. That is the chapter's order: flip, then rotate, then crop.
    """
    ones = torch.ones(count, device=device)
    zeros = torch.zeros(count, device=device)
    # Resized crop: a window of area s·A and aspect ratio r, placed uniformly, stretched to full
    # size. Like torchvision, draw up to 10 candidates and keep the first that fits in the image;
    # when none fits, take the whole image.
    if policy.crop_scale is not None:
        width, height = _crop_sizes(policy, count, generator, device)
        shift_x = (1 - width) * (2 * torch.rand(count, generator=generator, device=device) - 1)
        shift_y = (1 - height) * (2 * torch.rand(count, generator=generator, device=device) - 1)
    else:
        width, height, shift_x, shift_y = ones, ones, zeros, zeros
    # Rotation (sampling the input at the inverse angle turns the content by +angle).
    if policy.max_rotation_degrees:
        angle = torch.deg2rad(
            _uniform(
                -policy.max_rotation_degrees, policy.max_rotation_degrees, count, generator, device
            )
        )
    else:
        angle = zeros
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Flip: negate x of the sampling position.
    if policy.flip_probability:
        flip = torch.rand(count, generator=generator, device=device) < policy.flip_probability
        sign = torch.where(flip, -ones, ones)
    else:
        sign = ones
    # M = Flip · Rotation · [[w, 0, sx], [0, h, sy]]
    rotation_scale = torch.stack(
        [
            torch.stack([cos * width, -sin * height], dim=1),
            torch.stack([sin * width, cos * height], dim=1),
        ],
        dim=1,
    )  # (count, 2, 2)
    shift = torch.stack([cos * shift_x - sin * shift_y, sin * shift_x + cos * shift_y], dim=1)
    matrix = torch.cat([rotation_scale, shift.unsqueeze(2)], dim=2)
    matrix[:, 0, :] *= sign.unsqueeze(1)
    return matrix


def augment_batch(images: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) with per-image random parameters; black fill outside."""
    if policy.is_identity:
        return images
    if policy.max_rotation_degrees == 0 and policy.crop_scale is None:
        flip = torch.rand(images.shape[0], generator=generator, device=images.device)
        flip = (flip < policy.flip_probability).view(-1, 1, 1, 1)
        return torch.where(flip, images.flip(3), images)
    matrix = affine_matrices(policy, images.shape[0], generator, images.device).to(images.dtype)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def torchvision_transform(policy: Policy, size: int = 28):
    """The same policy as torchvision PIL transforms, one image at a time (the chapter's way)."""
    from torchvision import transforms

    steps = []
    if policy.flip_probability:
        steps.append(transforms.RandomHorizontalFlip(policy.flip_probability))
    if policy.max_rotation_degrees:
        steps.append(transforms.RandomRotation(policy.max_rotation_degrees))
    if policy.crop_scale is not None:
        steps.append(
            transforms.RandomResizedCrop(size, scale=policy.crop_scale, ratio=policy.crop_ratio)
        )
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)
