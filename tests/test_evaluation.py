"""Test-time augmentation: which views are averaged, and that each view is the picture it names."""

from __future__ import annotations

import numpy as np
import torch
from fashion_cnn.data.augment import to_float_batch
from fashion_cnn.models.architectures.cnn import ChapterCNN
from fashion_cnn.models.inference import predict, prediction_views, shifted


def test_a_shifted_view_moves_the_picture_and_fills_the_edge_with_black(arrays):
    batch = to_float_batch(torch.from_numpy(arrays["test_images"][:4].copy()))
    right = shifted(batch, 1, 0)
    assert torch.equal(right[..., :, 1:], batch[..., :, :-1])
    assert torch.all(right[..., :, 0] == 0)
    up = shifted(batch, 0, -2)
    assert torch.equal(up[..., :-2, :], batch[..., 2:, :])
    assert torch.all(up[..., -2:, :] == 0)
    assert torch.equal(shifted(batch, 0, 0), batch)
    assert right.shape == up.shape == batch.shape


def test_the_views_are_the_image_its_mirror_and_their_four_shifts():
    assert prediction_views(False, 0) == [(False, 0, 0)]
    assert prediction_views(True, 0) == [(False, 0, 0), (True, 0, 0)]
    views = prediction_views(True, 1)
    assert len(views) == len(set(views)) == 10
    assert {(dx, dy) for _, dx, dy in views} == {(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)}
    assert len(prediction_views(False, 2)) == 5 and (False, -2, 0) in prediction_views(False, 2)


def test_predict_averages_the_softmax_over_exactly_those_views(arrays):
    torch.manual_seed(0)
    model = ChapterCNN().eval()
    images = arrays["test_images"][:20]
    batch = to_float_batch(torch.from_numpy(images.copy()))
    cpu = torch.device("cpu")
    with torch.inference_mode():
        # in predict's batches of 8: oneDNN's sums can depend on the batch size (the AMX Xeon
        # with one thread: 1.5e-8 between a batch of 20 and batches of 8), and bits are compared
        raw = torch.cat([model(part) for part in batch.split(8)])
        mirror = torch.cat([model(part.flip(3)) for part in batch.split(8)])
        # each shifted view built here with numpy, independently of evaluation.shifted
        views = []
        for flip in (False, True):
            pictures = images[:, :, ::-1] if flip else images
            for dx, dy in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
                moved = np.zeros_like(pictures)
                src = pictures[:, max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
                moved[:, max(0, dy) : 28 - max(0, -dy), max(0, dx) : 28 - max(0, -dx)] = src
                views.append(model(to_float_batch(torch.from_numpy(moved))).softmax(dim=1))
    assert torch.equal(predict(model, images, cpu, 8), raw)
    # the flip-only average is unchanged by the shifts' code: earlier results stay bit-identical
    flip_only = predict(model, images, cpu, 8, test_time_flip=True)
    assert torch.equal(flip_only, (raw.softmax(dim=1) + mirror.softmax(dim=1)) / 2)
    ten = predict(model, images, cpu, 8, test_time_flip=True, test_time_shift=1)
    torch.testing.assert_close(ten, sum(views) / 10)
    assert not torch.allclose(ten, flip_only)
