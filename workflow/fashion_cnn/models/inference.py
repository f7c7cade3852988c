"""Running a model over uint8 images: batches, and the test-time views whose predictions are
averaged. Shared by validation during training, evaluation and the tools."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fashion_cnn.data.augment import to_float_batch


def shifted(batch: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The batch moved ``dx`` pixels right and ``dy`` down (negative: left, up), zeros shifted in."""
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return batch
    height, width = batch.shape[2:]
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad))
    return padded[:, :, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def prediction_views(test_time_flip: bool, test_time_shift: int) -> list[tuple[bool, int, int]]:
    """(mirrored, dx, dy) of every view whose predictions are averaged; the first is the image."""
    offsets = [(0, 0)]
    if test_time_shift:
        step = test_time_shift
        offsets += [(step, 0), (-step, 0), (0, step), (0, -step)]
    mirrors = [False, True] if test_time_flip else [False]
    return [(mirror, dx, dy) for mirror in mirrors for dx, dy in offsets]


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    *,
    test_time_flip: bool = False,
    test_time_shift: int = 0,
) -> torch.Tensor:
    """Scores (N, 10) on the CPU: raw outputs, or with test-time augmentation (``test_time_flip``:
    the mirror image too; ``test_time_shift``: each view moved that many pixels in the four
    directions too) the mean softmax over the views."""
    model.eval().to(device)
    views = prediction_views(test_time_flip, test_time_shift)
    scores = []
    for start in range(0, len(images), batch_size):
        batch = to_float_batch(
            torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        )
        if len(views) == 1:
            outputs = model(batch).float()
        else:
            outputs = sum(
                model(shifted(batch.flip(3) if mirror else batch, dx, dy)).float().softmax(dim=1)
                for mirror, dx, dy in views
            ) / len(views)
        scores.append(outputs.cpu())
    return torch.cat(scores)


def predict_probabilities(
    model: nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    *,
    test_time_flip: bool = False,
    test_time_shift: int = 0,
    softmax_head: bool = False,
) -> torch.Tensor:
    """Probabilities (N, 10) on the CPU with the test-time views: their mean softmax, or the
    softmax of the raw outputs of a single view (a Softmax head's output as it is)."""
    scores = predict(
        model,
        images,
        device,
        batch_size,
        test_time_flip=test_time_flip,
        test_time_shift=test_time_shift,
    )
    averaged = test_time_flip or bool(test_time_shift) or softmax_head
    return scores if averaged else scores.softmax(dim=1)


def accuracy_from_scores(scores: torch.Tensor, labels: np.ndarray) -> float:
    return float((scores.argmax(dim=1).numpy() == labels).mean())
