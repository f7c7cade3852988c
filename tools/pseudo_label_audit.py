"""How right a model's pseudo-labels are, class by class, on the unlabelled images: a
diagnosis after training (the true labels are read here, never during training). The model's
predictions are made as its evaluation makes them (its own test-time views): a FixMatch model's
pseudo-labels, or a self-training teacher's targets (their most likely class). Prints the share
of unlabelled images whose softmax passes the threshold, their accuracy, and per class the
passed pseudo-labels' share, precision and recall. The figures docs/results/notebook.md quotes
for the held-out control (fm_val95). Run: .venv/bin/python tools/pseudo_label_audit.py
CHECKPOINT DATA --labelled 500 --validation 5000 (images labelled..60000-validation are the
unlabelled ones); --threshold 0 for a teacher's targets, which pass no threshold.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn import CLASS_NAMES  # noqa: E402
from fashion_cnn.config.settings import ExperimentSettings  # noqa: E402
from fashion_cnn.data.dataset import load_prepared  # noqa: E402
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fashion_cnn.models.inference import predict_probabilities  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("data")
parser.add_argument("--labelled", type=int, default=500)
parser.add_argument("--validation", type=int, default=0)
parser.add_argument("--threshold", type=float, default=0.95)
args = parser.parse_args()

checkpoint = load_checkpoint(args.checkpoint)
model = model_from_checkpoint(checkpoint).eval()
settings = ExperimentSettings.from_dict(checkpoint["config"])
views = settings.evaluation
data = load_prepared(args.data)
end = len(data["train_images"]) - args.validation
truth = data["train_labels"][args.labelled : end]
probabilities = predict_probabilities(
    model,
    data["train_images"][args.labelled : end],
    torch.device("cpu"),
    2000,
    test_time_flip=views.test_time_flip,
    test_time_shift=views.test_time_shift,
    softmax_head=settings.model.output_softmax,
)
confidence, predicted = (t.numpy() for t in probabilities.max(1))
passed = confidence >= args.threshold
print(f"unlabelled images {len(truth)}: predictions right {np.mean(predicted == truth):.2%}")
print(
    f"passed {args.threshold}: {passed.mean():.2%}, of which right {np.mean(predicted[passed] == truth[passed]):.2%}"
)
for index, name in enumerate(CLASS_NAMES):
    chosen = passed & (predicted == index)
    print(
        f"{name:12s} share of passed {chosen.sum() / passed.sum():6.2%}  "
        f"precision {np.mean(truth[chosen] == index):6.2%}  recall {np.mean(predicted[truth == index] == index):6.2%}"
    )
