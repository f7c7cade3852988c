"""Using a trained model: the exported ONNX model on your own image files.

Each image (PNG, JPEG or anything Pillow reads; any size, colour or grey) becomes the input the
model was trained on, the way Fashion-MNIST's images were made from product photos (Xiao, Rasul
and Vollgraf 2017, "Fashion-MNIST", section 2): grey, the longest side resized to 28 pixels,
centred on a 28x28 canvas of its own background, light garments on a dark background. Fashion-
MNIST's last step negated the photos' white background; ``invert`` does that for a photo on a
light background, and a light background left as it is gets a warning. A 28x28 grey image is
used pixel for pixel, so Fashion-MNIST's own images give the evaluation's predictions.

The images go through ONNX Runtime in batches (its CUDA provider when present), and each gets one
row of the CSV: its three most likely classes with their probabilities. A file that cannot be
read as an image gets a row saying why, and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, UnidentifiedImageError

from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_csv
from fashion_cnn.evaluation.export import INPUT_NAME, session

log = logging.getLogger(__name__)

SIZE = 28
TOP = 3
# Mean grey level of an image's border above which it looks like a photo on a light background.
LIGHT_BORDER = 128
HEADER = [
    "file",
    "status",
    *(f"{what}_{rank}" for rank in range(1, TOP + 1) for what in ("class", "probability")),
]


@dataclass(frozen=True)
class Prepared:
    """One file: the model's input (uint8 28x28) or why there is none; whether it looked light."""

    path: Path
    pixels: np.ndarray | None
    problem: str = ""
    light: bool = False


def image_files(paths: list[Path]) -> list[Path]:
    """The files given, and the files of each folder given (not its sub-folders), in order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(child for child in path.iterdir() if child.is_file())
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist. Give image files, or folders of them.")
    if not found:
        raise UserError(
            f"No files in {', '.join(map(str, paths))}. Give image files (PNG, JPEG), or "
            "folders of them."
        )
    return found


def to_training_input(image: Image.Image, invert: bool) -> tuple[np.ndarray, bool]:
    """The 28x28 uint8 input the model was trained on, and whether the image looked light."""
    grey = image.convert("L")
    pixels = np.asarray(grey)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    light = float(border.mean()) > LIGHT_BORDER
    if grey.size != (SIZE, SIZE):
        width, height = grey.size
        scale = SIZE / max(width, height)
        resized = grey.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
        )
        canvas = Image.new("L", (SIZE, SIZE), int(np.median(border)))
        canvas.paste(resized, ((SIZE - resized.width) // 2, (SIZE - resized.height) // 2))
        pixels = np.asarray(canvas)
    if invert:
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels, dtype=np.uint8), light


def prepare(path: Path, invert: bool) -> Prepared:
    """One file as the model's input, or the reason it cannot be one."""
    try:
        if path.stat().st_size == 0:
            return Prepared(path, None, "empty file")
        with Image.open(path) as image:
            image.load()
            pixels, light = to_training_input(image, invert)
    except UnidentifiedImageError:
        return Prepared(path, None, "not an image Pillow can read")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return Prepared(path, None, f"unreadable ({type(error).__name__}: {error})")
    return Prepared(path, pixels, light=light)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """The model's outputs as probabilities: a softmax of its scores, unless they already are
    (a model with the chapter's Softmax head)."""
    if scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-4):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_session(model_path: Path, threads: int):
    """An ONNX Runtime session of the exported model, or one paragraph saying what is wrong."""
    if not model_path.is_file():
        raise UserError(
            f"The model {model_path} does not exist. The workflow exports each experiment's to "
            "results/<experiment>/model.onnx: run it first (`make run`), or give the path to one."
        )
    try:
        onnx.checker.check_model(onnx.load(str(model_path)))
    except Exception as error:  # onnx raises its own kinds, and protobuf's DecodeError
        raise UserError(
            f"{model_path} is not an ONNX model ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:160] if str(error) else 'unreadable'}). Give the "
            "model.onnx the workflow exported."
        ) from error
    return session(model_path, threads)


def predict_files(
    model_path: Path,
    paths: list[Path],
    output: Path,
    *,
    invert: bool = False,
    batch_size: int = 256,
    threads: int = 1,
) -> list[list]:
    """Write the CSV (``HEADER``) of every file's three most likely classes; returns its rows."""
    runner = load_session(model_path, threads)
    prepared = [prepare(path, invert) for path in image_files(paths)]
    usable = [item for item in prepared if item.pixels is not None]
    for item in usable:
        if item.light and not invert:
            log.warning(
                "%s looks like a photo on a light background; Fashion-MNIST's garments are light "
                "on dark: pass --invert for such photos",
                item.path,
            )
    scores = _scores(runner, [item.pixels for item in usable], batch_size)
    by_path = dict(zip([item.path for item in usable], probabilities(scores), strict=True))
    rows = [_row(item, by_path.get(item.path)) for item in prepared]
    write_csv(output, HEADER, rows)
    failed = len(prepared) - len(usable)
    log.info(
        "predicted %d image(s) with %s on %s; %d file(s) could not be read; wrote %s",
        len(usable),
        model_path,
        runner.get_providers()[0],
        failed,
        output,
    )
    return rows


def _scores(runner, images: list, batch_size: int) -> np.ndarray:
    if not images:
        return np.zeros((0, len(CLASS_NAMES)), dtype=np.float32)
    batches = []
    for start in range(0, len(images), batch_size):
        batch = np.stack(images[start : start + batch_size]).astype(np.float32)[:, None] / 255
        batches.append(runner.run(None, {INPUT_NAME: batch})[0])
    return np.concatenate(batches).astype(np.float64)


def _row(item: Prepared, probability: np.ndarray | None) -> list:
    if probability is None:
        return [str(item.path), item.problem, *[""] * (2 * TOP)]
    ranked = np.argsort(-probability)[:TOP]
    cells: list = []
    for index in ranked:
        cells += [CLASS_NAMES[index], f"{probability[index]:.4f}"]
    return [str(item.path), "light background, not inverted" if item.light else "ok", *cells]
