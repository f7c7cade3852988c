"""Test-time augmentation chosen on held-out images: the accuracy of one checkpoint with each
combination of ``test_time_flip`` and ``test_time_shift`` (``fashion_cnn.evaluation.evaluate.predict``,
the code evaluation runs), on the LAST N training images of a run trained with
``validation_images: N`` (never trained on), or, once the choice is made, on the test set. Given
several checkpoints, it scores their ensemble as well: each combination's probabilities averaged
over the models.

Run: .venv/bin/python tools/test_time_views.py CHECKPOINT results/data/fashion_mnist.npz --validation 5000
     .venv/bin/python tools/test_time_views.py CHECKPOINT results/data/fashion_mnist.npz --test
     .venv/bin/python tools/test_time_views.py A/model.pt B/model.pt fashion_mnist.npz --validation 5000
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn.data.dataset import load_prepared  # noqa: E402
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fashion_cnn.models.inference import accuracy_from_scores, predict_probabilities  # noqa: E402
from fashion_cnn.training.device import keep_freed_memory  # noqa: E402

COMBINATIONS = [(False, 0), (True, 0), (False, 1), (True, 1), (True, 2)]


def probabilities(
    model: nn.Module, softmax_head: bool, images: np.ndarray, views: tuple
) -> torch.Tensor:
    """One model's probabilities (N, 10) with the views ``(test_time_flip, test_time_shift)``."""
    flip, shift = views
    return predict_probabilities(
        model,
        images,
        torch.device("cpu"),
        1000,
        test_time_flip=flip,
        test_time_shift=shift,
        softmax_head=softmax_head,
    )


def accuracies(
    models: list[tuple[nn.Module, bool]], images: np.ndarray, labels: np.ndarray
) -> dict:
    """Per combination of views: each model's accuracy, and (several models) the accuracy of their
    mean probabilities."""
    table = {}
    for views in COMBINATIONS:
        each = [probabilities(model, head, images, views) for model, head in models]
        row = [accuracy_from_scores(scores, labels) for scores in each]
        if len(each) > 1:
            row.append(accuracy_from_scores(torch.stack(each).mean(dim=0), labels))
        table[views] = row
    return table


def _load(path: str, held_out_wanted: int) -> tuple[nn.Module, bool]:
    checkpoint = load_checkpoint(Path(path))
    held_out = checkpoint["config"].get("validation_images", 0)
    if held_out_wanted > held_out:
        sys.exit(
            f"error: {path} held out {held_out} training images, not {held_out_wanted}: the "
            f"others were trained on. Use --validation {held_out} or a checkpoint trained with "
            "validation_images."
        )
    return model_from_checkpoint(checkpoint, path), bool(checkpoint["config"].get("output_softmax"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    parser.add_argument("data")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--validation", type=int, metavar="N", help="the last N training images")
    which.add_argument("--test", action="store_true", help="the 10,000 test images")
    options = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    models = [_load(path, options.validation or 0) for path in options.checkpoints]
    arrays = load_prepared(Path(options.data))
    if options.test:
        images, labels, what = arrays["test_images"], arrays["test_labels"], "test images"
    else:
        count = options.validation
        images, labels = arrays["train_images"][-count:], arrays["train_labels"][-count:]
        what = f"validation images (the last {count} training images)"
    print(f"{', '.join(options.checkpoints)}: {len(labels)} {what}")
    for (flip, shift), row in accuracies(models, images, labels.astype(np.int64)).items():
        figures = "  ".join(f"{100 * accuracy:.2f}%" for accuracy in row)
        ensemble = "  (each model, then their ensemble)" if len(row) > 1 else ""
        print(f"test_time_flip {str(flip).lower():5}  test_time_shift {shift}: {figures}{ensemble}")
