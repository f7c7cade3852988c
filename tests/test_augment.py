"""Batched augmentation: per-image random parameters with the meaning of torchvision's transforms."""

from __future__ import annotations

import math

import torch
from fashion_cnn.augment import PRESETS, Policy, _crop_sizes, affine_matrices, augment_batch
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

CPU = torch.device("cpu")


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_none_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    assert augment_batch(images, PRESETS["none"], generator()) is images


def test_flip_mirrors_about_half_the_images_exactly():
    images = torch.rand(1, 1, 28, 28).repeat(400, 1, 1, 1)
    out = augment_batch(images, Policy(flip_probability=0.5), generator())
    flipped = torch.tensor([torch.equal(o, images[0].flip(2)) for o in out])
    kept = torch.tensor([torch.equal(o, images[0]) for o in out])
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_affine_flip_equals_a_pixel_mirror():
    """The affine path (used when flip is combined with rotation/crop) flips exactly too."""
    images = torch.rand(3, 1, 28, 28)
    matrix = torch.tensor([[[-1.0, 0, 0], [0, 1.0, 0]]]).repeat(3, 1, 1)
    grid = torch.nn.functional.affine_grid(matrix, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, align_corners=False)
    assert (out - images.flip(3)).abs().max() < 1e-5  # float rounding of the grid only


def test_rotation_matches_torchvision_rotate_at_the_same_angle():
    policy = Policy(max_rotation_degrees=10)
    images = torch.rand(6, 1, 28, 28)
    matrices = affine_matrices(policy, 6, generator(3), CPU)
    out = augment_batch(images, policy, generator(3))
    angles = [math.degrees(math.atan2(m[1, 0].item(), m[0, 0].item())) for m in matrices]
    assert all(abs(a) <= 10 for a in angles) and len({round(a, 3) for a in angles}) == 6
    for image, angle, result in zip(images, angles, out, strict=True):
        expected = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
        assert (expected - result).abs().mean() < 1e-5


def test_resized_crop_sizes_follow_torchvision_distribution():
    width, height = _crop_sizes(Policy(crop_scale=(0.9, 1.0)), 20000, generator(), CPU)
    assert bool(((width <= 1) & (height <= 1)).all())
    ours = (width * height).mean().item()
    image = torch.zeros(1, 28, 28)
    theirs = []
    for _ in range(4000):
        _, _, h, w = transforms.RandomResizedCrop.get_params(
            image, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
        )
        theirs.append(h * w / 784)
    assert abs(ours - sum(theirs) / len(theirs)) < 0.01


def test_chapter_policy_gives_each_image_its_own_parameters():
    images = torch.rand(1, 1, 28, 28).repeat(16, 1, 1, 1)
    out = augment_batch(images, PRESETS["chapter"], generator())
    assert out.shape == images.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) == 16


def test_same_seed_same_augmentation():
    images = torch.rand(8, 1, 28, 28)
    first = augment_batch(images, PRESETS["chapter"], generator(7))
    second = augment_batch(images, PRESETS["chapter"], generator(7))
    assert torch.equal(first, second)
