"""Beyond accuracy: the classification report, calibration, temperature scaling and the
corruptions, each checked against an independent computation (torchmetrics, scipy, the confusion
matrix by hand) or a property that a wrong implementation breaks; then the evaluation's own
figures on a real trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import base_config
from fashion_cnn import CLASS_NAMES
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.evaluation import calibration
from fashion_cnn.evaluation.classification import classification_report
from fashion_cnn.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from fashion_cnn.evaluation.trust import held_out, log_probabilities
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from torchmetrics.functional.classification import multiclass_calibration_error


def _logits(seed: int, n: int = 2000, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, (n, 10))
    labels = np.where(rng.random(n) < 0.7, logits.argmax(axis=1), rng.integers(0, 10, n))
    return logits, labels


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bins=st.sampled_from([5, 10, 15, 20]))
def test_ece_is_torchmetrics_ece(seed, bins):
    logits, labels = _logits(seed)
    probs = calibration.probabilities(log_probabilities(logits, averaged=False))
    ours = calibration.expected_calibration_error(probs, labels, bins)
    theirs = multiclass_calibration_error(
        torch.from_numpy(probs), torch.from_numpy(labels), num_classes=10, n_bins=bins, norm="l1"
    )
    assert ours == pytest.approx(float(theirs), abs=1e-6)


def test_nll_and_brier_are_their_definitions():
    logits, labels = _logits(1)
    log_probs = log_probabilities(logits, averaged=False)
    figures = calibration.scores(log_probs, labels, bins=15)
    rows = np.arange(len(labels))
    assert figures["nll"] == pytest.approx(
        -special.log_softmax(logits, axis=1)[rows, labels].mean()
    )
    probs = special.softmax(logits, axis=1)
    assert figures["brier"] == pytest.approx(((probs - np.eye(10)[labels]) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 4.0])
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(true_temperature):
    """Labels drawn from softmax(z / T): the NLL's minimum is at T (20,000 images: within 5%)."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 4, (20000, 10))
    probs = special.softmax(logits / true_temperature, axis=1)
    labels = (probs.cumsum(axis=1) > rng.random((20000, 1))).argmax(axis=1)
    fitted = calibration.fit_temperature(log_probabilities(logits, averaged=False), labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    before = calibration.scores(logits, labels, 15)
    after = calibration.scores(logits, labels, 15, fitted)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_averaged_views_become_log_probabilities():
    probs = special.softmax(_logits(2)[0], axis=1)
    assert np.allclose(calibration.probabilities(log_probabilities(probs, averaged=True)), probs)


def test_the_classification_report_is_the_confusion_matrix_by_hand():
    logits, labels = _logits(3)
    probs = special.softmax(logits, axis=1)
    report = classification_report(labels, probs)
    matrix = np.zeros((10, 10))
    np.add.at(matrix, (labels, probs.argmax(axis=1)), 1)
    precision = matrix.diagonal() / matrix.sum(axis=0)
    recall = matrix.diagonal() / matrix.sum(axis=1)
    f1 = 2 * precision * recall / (precision + recall)
    for i, name in enumerate(CLASS_NAMES):
        cell = report["per_class"][name]
        assert (cell["precision"], cell["recall"], cell["f1"]) == pytest.approx(
            (precision[i], recall[i], f1[i])
        )
        assert cell["support"] == matrix[i].sum()
    assert report["macro"]["f1"] == pytest.approx(f1.mean())
    assert report["weighted"]["recall"] == pytest.approx(matrix.trace() / matrix.sum())
    top2 = np.argsort(-probs, axis=1)[:, :2]
    assert report["top2_accuracy"] == pytest.approx((top2 == labels[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def test_images(prepared_data):
    with np.load(prepared_data) as arrays:
        return arrays["test_images"][:300]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corruption_is_the_same_every_time_and_grows_with_severity(name, test_images):
    changes = []
    for severity in SEVERITIES:
        first = corrupt(test_images, name, severity)
        assert first.dtype == np.uint8 and first.shape == test_images.shape
        assert np.array_equal(first, corrupt(test_images.copy(), name, severity))
        changes.append(np.abs(first.astype(float) - test_images).mean())
    assert 0 < changes[0] < changes[1] < changes[2], changes


def test_occlusion_blanks_a_square_of_its_side(test_images):
    side = int(CORRUPTIONS.get("occlusion").parameters[0])
    occluded = corrupt(test_images, "occlusion", 1)
    for image, original in zip(occluded, test_images, strict=True):
        changed = image != original
        assert (image[changed] == 0).all()
        rows, columns = np.nonzero((image == 0) & (original != 0))
        if len(rows):  # the changed pixels lie within one side x side square
            assert rows.max() - rows.min() < side and columns.max() - columns.min() < side


def test_translation_moves_each_image_whole():
    """Images with a 6-pixel dark border, moved 2 pixels: every pixel kept (the same sum), the
    centre of mass moved 2 pixels (rounded to whole pixels in each direction)."""
    rng = np.random.default_rng(5)
    images = np.zeros((200, 28, 28), dtype=np.uint8)
    images[:, 6:22, 6:22] = rng.integers(1, 256, (200, 16, 16))
    moved = corrupt(images, "translation", 1)
    assert np.array_equal(moved.sum(axis=(1, 2), dtype=int), images.sum(axis=(1, 2), dtype=int))
    grid = np.indices((28, 28))

    def centre(batch):
        mass = batch.astype(float).sum(axis=(1, 2))
        return np.stack([(batch * g).sum(axis=(1, 2)) / mass for g in grid], axis=1)

    distance = np.linalg.norm(centre(moved) - centre(images), axis=1)
    assert (distance >= 1.4).all() and (distance <= 2.9).all()


@pytest.mark.parametrize(
    ("experiment", "fitted_on", "fit", "score"),
    [
        ("cnn_dropout", "validation images", slice(55000, 60000), slice(None)),
        ("cnn_small_plain", "never read", slice(55000, 60000), slice(None)),
        ("cnn_baseline", "first half of the test set", slice(0, 5000), slice(5000, None)),
        ("cnn_500_fixmatch", "first half of the test set", slice(0, 5000), slice(5000, None)),
    ],
)
def test_the_temperature_is_fitted_on_images_the_run_never_trained_on(
    experiment, fitted_on, fit, score
):
    settings_ = ExperimentSettings.from_dict(base_config()["experiments"][experiment])
    held = held_out(settings_, limit=5000)
    assert fitted_on in held.fitted_on
    assert (held.fit, held.score) == (fit, score)
    used = (settings_.data.train_subset or 60000) + settings_.unlabelled_count()
    if not held.from_test and not settings_.data.validation_images:
        assert held.fit.start >= used


def test_evaluation_writes_the_report_and_calibration_of_a_real_model(
    tmp_path, real_checkpoint, prepared_data
):
    """The real evaluation on a real (tiny) model: its figures agree with torchmetrics' and
    scikit-learn's on the scores it saved, and the temperature was fitted on held-out images."""
    from fashion_cnn.evaluation.evaluate import EvaluationOutputs, evaluate_model, read_scores
    from sklearn.metrics import f1_score

    outputs = EvaluationOutputs(*(tmp_path / n for n in ("m.json", "c.csv", "p.csv", "s.npz")))
    metrics = evaluate_model(real_checkpoint, prepared_data, outputs, device_spec="cpu")
    log_probs, labels = read_scores(outputs.scores)
    assert log_probs.shape == (10000, 10) and labels.shape == (10000,)
    assert metrics["test_accuracy"] == pytest.approx((log_probs.argmax(axis=1) == labels).mean())
    probs = torch.from_numpy(log_probs.astype(np.float64)).softmax(dim=1)
    ece = multiclass_calibration_error(probs, torch.from_numpy(labels), 10, n_bins=15)
    assert metrics["calibration"]["ece"] == pytest.approx(float(ece), abs=1e-5)
    f1 = f1_score(labels, log_probs.argmax(axis=1), average="macro", zero_division=0)
    assert metrics["classification"]["macro"]["f1"] == pytest.approx(f1)
    temperature = metrics["calibration"]["temperature"]
    assert "never read" in temperature["fitted_on"] and temperature["fitted_images"] == 5000
    assert temperature["after"]["nll"] <= temperature["before"]["nll"] + 1e-9


def test_a_softmax_head_is_calibrated_on_its_probabilities(tmp_path, prepared_data):
    """The chapter's exact model ends in a Softmax: its outputs are probabilities, and their
    calibration is theirs (a second softmax would flatten every probability towards 1/10)."""
    from conftest import tiny_training_job
    from fashion_cnn.evaluation.evaluate import EvaluationOutputs, evaluate_model, read_scores
    from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint
    from fashion_cnn.training.engine import train_model

    job = tiny_training_job(
        tmp_path, prepared_data, train_subset=256, epochs=2, output_softmax=True
    )
    train_model(job)
    outputs = EvaluationOutputs(*(tmp_path / n for n in ("m.json", "c.csv", "p.csv", "s.npz")))
    metrics = evaluate_model(job.model_path, prepared_data, outputs, device_spec="cpu")
    log_probs, labels = read_scores(outputs.scores)
    checkpoint = load_checkpoint(job.model_path)
    model = model_from_checkpoint(checkpoint, str(job.model_path)).eval()
    with torch.no_grad():
        images = (
            torch.from_numpy(np.load(prepared_data)["test_images"][:100]).float()[:, None] / 255
        )
        probs = model(images).double().numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)  # the model's own Softmax
    assert np.allclose(np.exp(log_probs[:100]), probs, atol=1e-5)
    expected = calibration.scores(np.log(probs), labels[:100], bins=15)
    mine = calibration.scores(log_probs[:100], labels[:100], bins=15)
    assert mine == pytest.approx(expected, abs=1e-5)
    assert metrics["calibration"]["nll"] < 2.2  # not the flattened ~log(10) = 2.30
