"""Batched augmentation: per-image random parameters with the meaning of torchvision's transforms."""

from __future__ import annotations

import math

import torch
from fashion_cnn.data.augment import PRESETS, Policy, _crop_boxes, affine_matrices, augment_batch
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

CPU = torch.device("cpu")


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_none_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    assert augment_batch(images, PRESETS.get("none"), generator()) is images


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
    """RandomRotation resamples with nearest neighbour by default; so does the batched rotation."""
    policy = Policy(max_rotation_degrees=10)
    images = torch.rand(6, 1, 28, 28)
    flip_rotation, _ = affine_matrices(policy, 6, generator(3), CPU)
    out = augment_batch(images, policy, generator(3))
    angles = [math.degrees(math.atan2(m[1, 0].item(), m[0, 0].item())) for m in flip_rotation]
    assert all(abs(a) <= 10 for a in angles) and len({round(a, 3) for a in angles}) == 6
    for image, angle, result in zip(images, angles, out, strict=True):
        expected = TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST)
        assert (expected != result).float().mean() < 0.01  # a pixel may round the other way


def test_resized_crop_boxes_follow_torchvision_distribution():
    top, left, box_h, box_w = _crop_boxes(
        Policy(crop_scale=(0.9, 1.0)), 20000, 28, 28, generator=generator(), device=CPU
    )
    assert bool(((box_w <= 28) & (box_h <= 28) & (top + box_h <= 28) & (left + box_w <= 28)).all())
    assert bool((box_w == box_w.round()).all() and (top == top.round()).all())
    ours = (box_w * box_h / 784).mean().item()
    image = torch.zeros(1, 28, 28)
    theirs = []
    for _ in range(4000):
        _, _, h, w = transforms.RandomResizedCrop.get_params(
            image, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
        )
        theirs.append(h * w / 784)
    assert abs(ours - sum(theirs) / len(theirs)) < 0.005
    assert set(box_w.unique().tolist()) == {float(w) for w in range(25, 29)}


def test_chapter_policy_matches_torchvision_on_a_real_image(arrays):
    """Flip + nearest rotation, then a bilinear resized crop of a whole-pixel box: the chapter's
    transforms with the same parameters give the same image, up to the crop's border pixels
    (torchvision resizes the cut-out box, the batched crop reads the neighbours beyond it)."""
    image = torch.from_numpy(arrays["train_images"][:1]).float().div(255).unsqueeze(1)
    batch = image.repeat(32, 1, 1, 1)
    policy = PRESETS.get("chapter")
    flip_rotation, crop = affine_matrices(policy, 32, generator(5), CPU)
    out = augment_batch(batch, policy, generator(5))
    for index in range(32):
        m = flip_rotation[index]
        flipped = bool(m[0, 0] * m[1, 1] < 0)
        angle = math.degrees(math.atan2(m[1, 0].item(), m[1, 1].item()))
        scale_x, shift_x, scale_y, shift_y = (
            crop[index, 0, 0],
            crop[index, 0, 2],
            crop[index, 1, 1],
            crop[index, 1, 2],
        )
        box_w, box_h = round(28 * scale_x.item()), round(28 * scale_y.item())
        left = round((shift_x.item() + 1) * 14 - box_w / 2)
        top = round((shift_y.item() + 1) * 14 - box_h / 2)
        expected = TF.hflip(image[0]) if flipped else image[0]
        expected = TF.rotate(expected, angle, interpolation=InterpolationMode.NEAREST)
        expected = TF.resized_crop(expected, top, left, box_h, box_w, [28, 28], antialias=False)
        assert (expected - out[index]).abs().mean() < 0.005, index  # measured: 2e-4 on average


def test_chapter_policy_gives_each_image_its_own_parameters():
    images = torch.rand(1, 1, 28, 28).repeat(16, 1, 1, 1)
    out = augment_batch(images, PRESETS.get("chapter"), generator())
    assert out.shape == images.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) == 16


def test_same_seed_same_augmentation():
    images = torch.rand(8, 1, 28, 28)
    first = augment_batch(images, PRESETS.get("chapter"), generator(7))
    second = augment_batch(images, PRESETS.get("chapter"), generator(7))
    assert torch.equal(first, second)


def test_random_erasing_blacks_out_one_rectangle_as_torchvision_samples_it():
    """flip_crop_erase: about half the images get one all-zero rectangle whose area and aspect
    ratio fall in RandomErasing's ranges; the distribution of erased areas matches torchvision's
    own RandomErasing on the same kind of image."""
    from fashion_cnn.data.augment import erase_masks

    policy = PRESETS.get("flip_crop_erase")
    count = 4000
    generator = torch.Generator().manual_seed(0)
    masks = erase_masks(policy, (count, 1, 28, 28), generator, torch.device("cpu"))[:, 0]
    erased = masks.flatten(1).any(dim=1)
    assert 0.46 < float(erased.float().mean()) < 0.54
    areas = masks.flatten(1).sum(dim=1)[erased].float()
    for mask in masks[erased][:200]:  # one solid rectangle each
        rows, columns = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height, width = int(rows.max() - rows.min() + 1), int(columns.max() - columns.min() + 1)
        assert int(mask.sum()) == height * width and height < 28 and width < 28
    low, high = policy.erase_scale
    assert areas.min() >= math.floor(low * 784 * 0.5) and areas.max() <= math.ceil(high * 784 * 1.6)
    reference = transforms.RandomErasing(
        1.0, scale=policy.erase_scale, ratio=policy.erase_ratio, value=0
    )
    torch.manual_seed(1)
    ones = torch.ones(1, 28, 28)
    theirs = torch.tensor([float((reference(ones) == 0).sum()) for _ in range(2000)])
    theirs = theirs[theirs > 0]
    assert abs(float(areas.mean()) - float(theirs.mean())) < 0.05 * float(theirs.mean())
    assert abs(float(areas.median()) - float(theirs.median())) <= 0.08 * float(theirs.median())
    images = augment_batch(torch.ones(count, 1, 28, 28), policy, torch.Generator().manual_seed(0))
    assert 0.46 < float((images == 0).flatten(1).any(dim=1).float().mean()) < 0.6
