"""Named augmentation presets, applied to whole batches on the training device.

Each image of a batch gets its own random flip, rotation and resized crop, as torchvision's
per-image transforms would give it, but as one affine matrix per image for flip and rotation and
one for the crop, each applied to the whole batch with a single ``grid_sample`` call: no
per-sample Python in the training loop.

``torchvision_transform`` gives the same policy as the chapter writes it (PIL transforms, one image
at a time) for the reference DataLoader pipeline and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fashion_cnn.core.registry import Registry


@dataclass(frozen=True)
class Policy:
    flip_probability: float = 0.0
    max_rotation_degrees: float = 0.0
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # RandomErasing (Zhong et al., 2017): with this probability a rectangle of area fraction
    # erase_scale and aspect ratio erase_ratio is set to 0 (the images' black background)
    erase_probability: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 1 / 0.3)

    @property
    def is_identity(self) -> bool:
        return (
            self.flip_probability == 0
            and self.max_rotation_degrees == 0
            and self.crop_scale is None
            and self.erase_probability == 0
        )


# The named presets an experiment's `augmentation` chooses from. Adding one is a PRESETS.add line
# here, a test and `make choices` (the torch-free catalog the config validates with).
PRESETS: Registry[Policy] = Registry("augmentation preset", "augmentation")
PRESETS.add("none", Policy())
# The chapter: RandomHorizontalFlip(), RandomRotation(10), RandomResizedCrop(28, scale=(0.9, 1)).
PRESETS.add("chapter", Policy(flip_probability=0.5, max_rotation_degrees=10, crop_scale=(0.9, 1.0)))
PRESETS.add("flip", Policy(flip_probability=0.5))
PRESETS.add("flip_crop", Policy(flip_probability=0.5, crop_scale=(0.75, 1.0)))
# flip_crop with random erasing, the paper's settings (its Fashion-MNIST results: WRN-28-10 96.35%)
PRESETS.add(
    "flip_crop_erase",
    Policy(flip_probability=0.5, crop_scale=(0.75, 1.0), erase_probability=0.5),
)
# The strong view of semi-supervised training (unlabelled_images): flip, rotation up to 30
# degrees, a resized crop down to half the image, and always one erased rectangle (FixMatch's
# Cutout), where the weak view is the experiment's augmentation.
PRESETS.add(
    "strong",
    Policy(
        flip_probability=0.5,
        max_rotation_degrees=30,
        crop_scale=(0.5, 1.0),
        erase_probability=1.0,
    ),
)


def to_float_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) or (N, 1, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1]."""
    if images_uint8.dim() == 3:
        images_uint8 = images_uint8.unsqueeze(1)
    return images_uint8.float().div_(255)


def get_policy(name: str) -> Policy:
    return PRESETS.get(name)


def _uniform(low, high, count, generator, device):
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


CROP_ATTEMPTS = 10


def _candidate_sizes(scale, ratio, count: int, area: int, *, generator, device):
    """torchvision's candidate boxes (RandomResizedCrop, RandomErasing): 10 per image, of area
    s·``area`` (s uniform in ``scale``) and aspect ratio r (log-uniform in ``ratio``), rounded to
    pixels; returns (sqrt(A·r), sqrt(A/r)), each (count, 10)."""
    shape = (count, CROP_ATTEMPTS)
    low, high = scale
    areas = area * (low + (high - low) * torch.rand(shape, generator=generator, device=device))
    log_low, log_high = (math.log(r) for r in ratio)
    ratios = torch.exp(
        log_low + (log_high - log_low) * torch.rand(shape, generator=generator, device=device)
    )
    return torch.round(torch.sqrt(areas * ratios)), torch.round(torch.sqrt(areas / ratios))


def _offsets(height, width, box_h, box_w, *, generator, device):
    """A random whole-pixel (top, left) for each box inside the image."""
    count = len(box_h)
    top = torch.floor((height - box_h + 1) * torch.rand(count, generator=generator, device=device))
    left = torch.floor((width - box_w + 1) * torch.rand(count, generator=generator, device=device))
    return top, left


def _first(candidates: torch.Tensor, fits: torch.Tensor) -> torch.Tensor:
    index = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first fitting candidate
    return candidates.gather(1, index).squeeze(1)


def _crop_boxes(
    policy: Policy, count: int, height: int, width: int, *, generator, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole-pixel crop boxes (top, left, box height, box width), torchvision's sampling rule:
    up to 10 candidates of area s·H·W and aspect ratio r, sizes rounded to pixels, the first that
    fits is kept and placed at a random pixel offset; when none fits, the whole image."""
    box_w, box_h = _candidate_sizes(
        policy.crop_scale,
        policy.crop_ratio,
        count,
        height * width,
        generator=generator,
        device=device,
    )
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    any_fits = fits.any(dim=1)
    box_w = torch.where(any_fits, _first(box_w, fits), float(width))
    box_h = torch.where(any_fits, _first(box_h, fits), float(height))
    top, left = _offsets(height, width, box_h, box_w, generator=generator, device=device)
    return top, left, box_h, box_w


def affine_matrices(
    policy: Policy, count: int, generator: torch.Generator, device: torch.device, size=(28, 28)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 2x3 sampling matrices per image, in ``affine_grid``'s normalised coordinates.

    The first flips and rotates (the chapter's RandomHorizontalFlip, then RandomRotation); the
    second is the resized crop of the rotated image (RandomResizedCrop). They are applied as two
    ``grid_sample`` passes because torchvision resamples twice with different filters: nearest
    neighbour for the rotation (RandomRotation's default) and bilinear for the resize. Folding
    both into one bilinear pass would give smoother images than the chapter's, and measurably
    other accuracies (docs/results/notebook.md).
    """
    ones = torch.ones(count, device=device)
    zeros = torch.zeros(count, device=device)
    # Resized crop: the pixel box, as a scale and a shift of the normalised sampling position.
    if policy.crop_scale is not None:
        height, width = size
        top, left, box_h, box_w = _crop_boxes(
            policy, count, height, width, generator=generator, device=device
        )
        scale_x, scale_y = box_w / width, box_h / height
        shift_x, shift_y = (2 * left + box_w) / width - 1, (2 * top + box_h) / height - 1
    else:
        scale_x, scale_y, shift_x, shift_y = ones, ones, zeros, zeros
    crop = torch.stack(
        [torch.stack([scale_x, zeros, shift_x], 1), torch.stack([zeros, scale_y, shift_y], 1)], 1
    )
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
    flip_rotation = torch.stack(
        [torch.stack([sign * cos, -sign * sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1
    )
    return flip_rotation, crop


def _resample(images: torch.Tensor, matrix: torch.Tensor, mode: str) -> torch.Tensor:
    grid = F.affine_grid(matrix.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def augment_batch(images: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) with per-image random parameters; black fill outside."""
    if policy.is_identity:
        return images
    if policy.max_rotation_degrees == 0 and policy.crop_scale is None:
        if policy.flip_probability:
            flip = torch.rand(images.shape[0], generator=generator, device=images.device)
            flip = (flip < policy.flip_probability).view(-1, 1, 1, 1)
            images = torch.where(flip, images.flip(3), images)
    else:
        flip_rotation, crop = affine_matrices(
            policy, images.shape[0], generator, images.device, tuple(images.shape[2:])
        )
        if policy.max_rotation_degrees or policy.flip_probability:
            images = _resample(images, flip_rotation, "nearest")
        if policy.crop_scale is not None:
            images = _resample(images, crop, "bilinear")
    if policy.erase_probability:
        images = images.masked_fill(erase_masks(policy, images.shape, generator, images.device), 0)
    return images


def erase_masks(policy: Policy, shape, generator: torch.Generator, device) -> torch.Tensor:
    """(N, 1, H, W) masks of the rectangles RandomErasing sets to 0, torchvision's sampling rule:
    with probability p, up to 10 candidates of area s·H·W and aspect ratio r, sizes rounded to
    pixels; the first smaller than the image is placed at a random pixel offset; when none is,
    nothing is erased."""
    count, _, height, width = shape
    box_h, box_w = _candidate_sizes(
        policy.erase_scale,
        policy.erase_ratio,
        count,
        height * width,
        generator=generator,
        device=device,
    )
    fits = (box_h < height) & (box_w < width)
    box_h, box_w = _first(box_h, fits), _first(box_w, fits)
    erase = fits.any(dim=1) & (
        torch.rand(count, generator=generator, device=device) < policy.erase_probability
    )
    top, left = _offsets(height, width, box_h, box_w, generator=generator, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, width)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + box_h).view(-1, 1, 1))
        & (columns >= left.view(-1, 1, 1))
        & (columns < (left + box_w).view(-1, 1, 1))
    )
    return (inside & erase.view(-1, 1, 1)).unsqueeze(1)


def torchvision_transform(policy: Policy, size: int = 28):
    """The same policy as torchvision PIL transforms, one image at a time (the chapter's way)."""
    # torchvision's transforms (a second to import) only for the chapter's DataLoader pipeline
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
    if policy.erase_probability:
        steps.append(
            transforms.RandomErasing(
                policy.erase_probability, scale=policy.erase_scale, ratio=policy.erase_ratio
            )
        )
    return transforms.Compose(steps)
