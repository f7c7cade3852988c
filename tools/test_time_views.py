"""Test-time augmentation chosen on held-out images: the accuracy of one checkpoint with each
combination of ``test_time_flip`` and ``test_time_shift`` (``fashion_cnn.evaluation.evaluate.predict``,
the code evaluation runs), on the LAST N training images of a run trained with
``validation_images: N`` (never trained on), or, once the choice is made, on the test set.

Run: .venv/bin/python tools/test_time_views.py CHECKPOINT results/data/fashion_mnist.npz --validation 5000
     .venv/bin/python tools/test_time_views.py CHECKPOINT results/data/fashion_mnist.npz --test
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn.data.dataset import load_prepared  # noqa: E402
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fashion_cnn.models.inference import accuracy_from_scores, predict  # noqa: E402
from fashion_cnn.training.device import keep_freed_memory  # noqa: E402

COMBINATIONS = [(False, 0), (True, 0), (False, 1), (True, 1), (True, 2)]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--validation", type=int, metavar="N", help="the last N training images")
    which.add_argument("--test", action="store_true", help="the 10,000 test images")
    options = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    checkpoint = load_checkpoint(Path(options.checkpoint))
    held_out = checkpoint["config"].get("validation_images", 0)
    if options.validation and options.validation > held_out:
        sys.exit(
            f"error: this checkpoint held out {held_out} training images, not "
            f"{options.validation}: the others were trained on. Use --validation {held_out} "
            "or a checkpoint trained with validation_images."
        )
    model = model_from_checkpoint(checkpoint, options.checkpoint)
    arrays = load_prepared(Path(options.data))
    if options.test:
        images, labels, what = arrays["test_images"], arrays["test_labels"], "test images"
    else:
        count = options.validation
        images, labels = arrays["train_images"][-count:], arrays["train_labels"][-count:]
        what = f"validation images (the last {count} training images)"
    labels = labels.astype(np.int64)
    print(f"{options.checkpoint}: {len(labels)} {what}")
    for flip, shift in COMBINATIONS:
        scores = predict(
            model, images, torch.device("cpu"), 1000, test_time_flip=flip, test_time_shift=shift
        )
        accuracy = 100 * accuracy_from_scores(scores, labels)
        print(f"test_time_flip {str(flip).lower():5}  test_time_shift {shift}: {accuracy:.2f}%")
