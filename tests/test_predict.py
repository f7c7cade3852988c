"""`predict`: the exported ONNX model on image files. Real test images, written out as PNG (and as
enlarged colour JPEG, and on a light background), give the evaluation's predictions on those
images; unreadable and empty files get a row each and the run goes on; a missing model is one
paragraph."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_no_traceback, cli, flat, tiny_training_job
from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.errors import UserError
from fashion_cnn.evaluation.evaluate import load_trained
from fashion_cnn.evaluation.export import export_model
from fashion_cnn.evaluation.predicting import predict_files
from fashion_cnn.models.inference import predict
from fashion_cnn.training.engine import train_model
from PIL import Image

COUNT = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory, prepared_data, arrays):
    """The chapter's CNN trained a little (2,000 real images, two epochs: sure of many test
    images), exported to ONNX, and the evaluation's probabilities on the first test images
    (its own prediction function, PyTorch)."""
    folder = tmp_path_factory.mktemp("predict")
    job = tiny_training_job(folder, prepared_data, threads=2, train_subset=2000, epochs=2)
    train_model(job)
    _, model = load_trained(job.model_path)
    export_model(model, folder / "model.onnx", opset=20)
    images = arrays["test_images"][:COUNT]
    scores = predict(model, images, torch.device("cpu"), batch_size=COUNT)
    return folder / "model.onnx", images, scores.softmax(dim=1).numpy()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write(folder: Path, images: np.ndarray, how) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(images):
        paths.append(how(Image.fromarray(pixels), folder / f"image_{index:03d}"))
    return paths


def _png(image: Image.Image, stem: Path) -> Path:
    image.save(stem.with_suffix(".png"))
    return stem.with_suffix(".png")


def _colour_jpeg(image: Image.Image, stem: Path) -> Path:
    """Four times larger, in colour, JPEG-compressed: a photo's form of the same garment."""
    image.convert("RGB").resize((112, 112), Image.Resampling.BICUBIC).save(
        stem.with_suffix(".jpg"), quality=95
    )
    return stem.with_suffix(".jpg")


def test_png_files_of_test_images_get_the_evaluations_predictions(exported, tmp_path):
    model, images, expected = exported
    _write(tmp_path / "images", images, _png)
    rows = predict_files(model, [tmp_path / "images"], tmp_path / "predictions.csv")
    assert rows == [list(row.values()) for row in _rows(tmp_path / "predictions.csv")]
    assert len(rows) == COUNT
    for row, probability in zip(_rows(tmp_path / "predictions.csv"), expected, strict=True):
        ranked = np.argsort(-probability)[:3]
        assert row["status"] == "ok"
        assert [row[f"class_{rank}"] for rank in (1, 2, 3)] == [CLASS_NAMES[i] for i in ranked]
        assert float(row["probability_1"]) == pytest.approx(probability[ranked[0]], abs=1e-4)


def test_enlarged_colour_jpegs_get_the_same_classes(exported, tmp_path):
    """Resized back to 28x28 (the longest side, as Fashion-MNIST's photos were), JPEG's loss and
    two resamplings later: the same class for at least 95% of the images, and for every one the
    evaluation was sure of (its probability 0.5 above the next class's)."""
    model, images, expected = exported
    paths = _write(tmp_path / "photos", images, _colour_jpeg)
    rows = predict_files(model, paths, tmp_path / "predictions.csv")
    margins = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2]
    same = [rows[index][2] == CLASS_NAMES[expected[index].argmax()] for index in range(COUNT)]
    assert sum(same) >= 0.95 * COUNT, same
    sure = [index for index in range(COUNT) if margins[index] > 0.5]
    assert len(sure) >= COUNT // 4 and all(same[index] for index in sure)


def test_a_light_background_is_named_and_inverted_on_request(exported, tmp_path, caplog):
    model, images, expected = exported
    _write(tmp_path / "light", 255 - images, _png)
    rows = predict_files(model, [tmp_path / "light"], tmp_path / "plain.csv")
    assert all(row[1] == "light background, not inverted" for row in rows)
    assert "pass --invert" in caplog.text
    inverted = predict_files(model, [tmp_path / "light"], tmp_path / "inverted.csv", invert=True)
    assert [row[2] for row in inverted] == [CLASS_NAMES[i] for i in expected.argmax(axis=1)]


def test_an_unreadable_or_empty_file_is_one_row_and_the_others_go_on(exported, tmp_path):
    model, images, _ = exported
    folder = tmp_path / "mixed"
    _write(folder, images[:2], _png)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "cut.png").write_bytes((folder / "image_000.png").read_bytes()[:60])
    rows = {Path(row[0]).name: row for row in predict_files(model, [folder], tmp_path / "p.csv")}
    assert rows["empty.png"][1] == "empty file"
    assert rows["notes.txt"][1] == "not an image Pillow can read"
    assert rows["cut.png"][1].startswith("unreadable (")
    assert rows["image_000.png"][1] == rows["image_001.png"][1] == "ok"


def test_no_model_or_no_images_is_one_paragraph(exported, tmp_path):
    model, _, _ = exported
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x01garbage")
    for call, expected in [
        (lambda: predict_files(tmp_path / "none.onnx", [tmp_path], tmp_path / "p.csv"), "does not exist"),
        (lambda: predict_files(tmp_path / "broken.onnx", [tmp_path], tmp_path / "p.csv"), "is not an ONNX model"),
        (lambda: predict_files(model, [tmp_path / "nowhere"], tmp_path / "p.csv"), "does not exist"),
    ]:  # fmt: skip
        with pytest.raises(UserError, match=expected):
            call()
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_the_command_line_predicts_a_folder_and_names_a_missing_model(exported, tmp_path):
    model, images, expected = exported
    _write(tmp_path / "images", images[:5], _png)
    result = cli("predict", tmp_path / "images", "--model", model, "--output", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    assert [row["class_1"] for row in _rows(tmp_path / "p.csv")] == [
        CLASS_NAMES[i] for i in expected[:5].argmax(axis=1)
    ]
    missing = cli("predict", tmp_path / "images", "--model", tmp_path / "no.onnx", "--output", "x")
    assert missing.returncode == 2
    assert "does not exist" in flat(missing.stderr) and "make run" in flat(missing.stderr)
    assert_no_traceback(missing.stderr)
