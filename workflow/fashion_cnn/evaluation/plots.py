"""The chapter's figures, and a few of our own, all written atomically as PNG."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fashion_cnn import AUGMENTATION_FIGURES, CLASS_NAMES  # noqa: E402
from fashion_cnn.config.sweeps import format_value  # noqa: E402
from fashion_cnn.core.files import save_figure  # noqa: E402
from fashion_cnn.data.augment import Policy, augment_batch  # noqa: E402
from fashion_cnn.models.catalog import conv_layers  # noqa: E402

log = logging.getLogger(__name__)

DPI = 100


def save_and_close(figure, path: Path) -> None:
    figure.tight_layout()
    save_figure(figure, path, dpi=DPI)
    plt.close(figure)
    log.info("wrote %s", path)


def plot_samples(
    images: np.ndarray, labels: np.ndarray, grid_path: Path, colorbar_path: Path
) -> None:
    """The chapter's 4x4 grid of the first 16 training images, and one image with a colorbar."""
    figure, axes = plt.subplots(4, 4, figsize=(8, 8))
    for index, axis in enumerate(axes.flat):
        axis.imshow(images[index], cmap="gray")
        axis.set_title(CLASS_NAMES[labels[index]])
        axis.axis("off")
    save_and_close(figure, grid_path)

    figure, axis = plt.subplots(figsize=(5, 4))
    shown = axis.imshow(images[0], cmap="gray")
    figure.colorbar(shown, ax=axis)
    axis.set_title(f"{CLASS_NAMES[labels[0]]} (pixel values 0-255)")
    save_and_close(figure, colorbar_path)


def _row(axes, images: list[torch.Tensor], titles: list[str]) -> None:
    for axis, image, title in zip(axes, images, titles, strict=True):
        axis.imshow(image.squeeze().numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(title)
        axis.axis("off")


def plot_augmentations(images: np.ndarray, output_folder: Path, seed: int) -> list[Path]:
    """The chapter's augmentation figures, on real training images, with the engine's own code."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.from_numpy(images[0]).float().div(255).view(1, 1, 28, 28)
    repeated = image.repeat(3, 1, 1, 1)
    original = ("original", image[0])

    def panels(title, policy):
        return [
            original,
            *((title, augmented) for augmented in augment_batch(repeated, policy, generator)),
        ]

    figures = {
        "flip": [original, ("horizontal flip", image[0].flip(2))],
        "random_flips": panels("random flip", Policy(flip_probability=0.5)),
        "random_rotations": panels("rotation up to ±20°", Policy(max_rotation_degrees=20)),
        "random_resized_crops": panels("resized crop 0.7-1.0", Policy(crop_scale=(0.7, 1.0))),
    }
    assert tuple(figures) == AUGMENTATION_FIGURES  # the names the rules ask for
    paths = []
    for name, shown in figures.items():
        figure, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.4))
        _row(axes, [picture for _, picture in shown], [title for title, _ in shown])
        path = output_folder / f"{name}.png"
        save_and_close(figure, path)
        paths.append(path)
    return paths


def _filter_grid(axes, weights: torch.Tensor) -> None:
    """Each filter's input channel 0 in grey scale, as the chapter shows them."""
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(weights):
            axis.imshow(weights[index, 0].numpy(), cmap="gray")


def plot_filters(
    model: torch.nn.Module, chapter_path: Path, layers_path: Path, filters: str
) -> None:
    """The chapter's figure and the first 16 filters of every conv layer. ``filters`` is the model
    entry's: last (the chapter's CNN: the first 16 filters of its last conv layer), first (a
    pretrained network's conv1: all its filters in the second figure), or none (no convolutions:
    both figures say so)."""
    convs = conv_layers(model)
    if filters == "none" or not convs:
        for path in (chapter_path, layers_path):
            figure, axis = plt.subplots(figsize=(6, 2))
            axis.axis("off")
            axis.text(
                0.5,
                0.5,
                f"{type(model).__name__} has no convolution filters to draw",
                ha="center",
                va="center",
            )
            save_and_close(figure, path)
        return
    is_resnet = filters == "first"
    chapter_name, chapter_conv = convs[0] if is_resnet else convs[-1]
    weights = chapter_conv.weight.detach().float().cpu()
    figure, axes = plt.subplots(4, 4, figsize=(6, 6))
    _filter_grid(axes, weights[:16])
    figure.suptitle(f"{chapter_name}: first 16 filters, input channel 0")
    save_and_close(figure, chapter_path)

    if is_resnet:
        figure, axes = plt.subplots(8, 8, figsize=(8, 8))
        _filter_grid(axes, weights)
        figure.suptitle("conv1: all 64 filters (7x7, 1 input channel)")
    else:
        figure, axes = plt.subplots(
            len(convs), 16, figsize=(16, 1.2 * len(convs) + 0.6), squeeze=False
        )
        for row, (name, conv) in enumerate(convs):
            _filter_grid(axes[row], conv.weight.detach().float().cpu()[:16])
            axes[row, 0].set_title(
                f"{name} ({conv.out_channels}x{conv.in_channels}x{conv.kernel_size[0]}x{conv.kernel_size[1]})",
                loc="left",
                fontsize=9,
            )
        figure.suptitle("first 16 filters of every conv layer, input channel 0")
    save_and_close(figure, layers_path)


def read_history(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_history(history_paths: list[Path], output: Path, title: str) -> list[str]:
    """Training loss and accuracy per epoch: the mean over seeds, with a band of one standard
    deviation either side when there are several (none for one seed). Where the runs held out
    validation images, their loss and accuracy are drawn beside the training ones: the gap
    between the two curves is the overfitting the training curve alone cannot show. Where they
    trained with unlabelled images, the share of pseudo-labels that passed the threshold is
    drawn dashed on the accuracy panel. Returns the names of the curves drawn."""
    histories = [read_history(path) for path in history_paths]
    epochs = min(len(history.get("epoch", [])) for history in histories)
    x = np.arange(1, epochs + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    n = len(histories)
    validated = all("valid_accuracy" in history for history in histories)
    semi_supervised = all("pseudo_label_rate" in history for history in histories)
    drawn = []
    for axis, key, scale, color, label in (
        (axes[0], "train_loss", 1, "tab:blue", "training loss"),
        (axes[1], "train_accuracy", 100, "tab:green", "training accuracy (%)"),
        *(
            (
                (axes[0], "valid_loss", 1, "tab:orange", "validation loss"),
                (axes[1], "valid_accuracy", 100, "tab:red", "validation accuracy (%)"),
            )
            if validated
            else ()
        ),
    ):
        values = scale * np.array([history[key][:epochs] for history in histories])
        mean = values.mean(axis=0)
        name = label.split(" (")[0]
        axis.plot(
            x,
            mean,
            marker="." if epochs < 50 else None,
            color=color,
            label=f"{name}, mean of {n}" if validated or semi_supervised else f"mean of {n}",
        )
        if n > 1:
            spread = values.std(axis=0, ddof=1)
            axis.fill_between(x, mean - spread, mean + spread, color=color, alpha=0.25, lw=0)
        if n > 1 or validated:
            axis.legend(loc="best", title="band: ± 1 std" if n > 1 else None)
        shown = ("loss" if "loss" in key else "accuracy (%)") if validated else label
        if semi_supervised and "accuracy" in key:
            shown = "accuracy, pseudo-labels passed (%)"
        what = shown.split(" (")[0]
        axis.set(xlabel="epoch", ylabel=shown, title=f"{what} (n={n})")
        axis.grid(alpha=0.3)
        drawn.append(name)
    if semi_supervised:
        rates = 100 * np.array([history["pseudo_label_rate"][:epochs] for history in histories])
        axes[1].plot(x, rates.mean(axis=0), "--", color="tab:purple", label="pseudo-labels passed")
        axes[1].legend(loc="best", title="band: ± 1 std" if n > 1 else None)
        drawn.append("pseudo-labels passed")
    figure.suptitle(title)  # once, above both panels: a sweep point's name is long
    save_and_close(figure, output)
    return drawn


def plot_confusion_matrix(matrix: np.ndarray, output: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(8, 7))
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis)
    axis.set_xticks(range(10), CLASS_NAMES, rotation=45, ha="right")
    axis.set_yticks(range(10), CLASS_NAMES)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i, j] > threshold else "black",
            )
    save_and_close(figure, output)


def plot_sweep(definition: dict, metrics: list[dict], best_index: int, output: Path) -> None:
    """Test accuracy against each swept key: the mean over seeds with its 95% interval as error
    bars (none for n = 1), one line per combination of the other keys, the best point starred."""
    keys = definition["keys"]
    summaries = [data["test_accuracy_over_seeds"] for data in metrics]
    figure, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        _sweep_axis(axis, key, definition, summaries, best_index)
    counts = sorted({summary["n"] for summary in summaries})
    bars = (
        "no error bars (n = 1)"
        if counts == [1]
        else "error bars: 95% interval of the mean (t distribution)"
    )
    n_text = "n = " + "/".join(map(str, counts)) + " seeds per point"
    figure.suptitle(
        f"sweep {definition['name']} ({definition['experiment']})\n{n_text}; {bars}; "
        "star: best mean",
        fontsize="medium",
    )
    save_and_close(figure, output)


def _sweep_axis(axis, key: str, definition: dict, summaries: list[dict], best_index: int) -> None:
    """One panel: accuracy against ``key``, a line per combination of the other keys."""
    keys, points = definition["keys"], definition["points"]
    ticks = list(dict.fromkeys(format_value(point["values"][key]) for point in points))
    others = [other for other in keys if other != key]
    series: dict[str, list[int]] = {}
    for index, point in enumerate(points):
        label = ", ".join(f"{o}={format_value(point['values'][o])}" for o in others)
        series.setdefault(label or "mean over seeds", []).append(index)
    width = 0.08 * (len(series) - 1)
    for number, (label, indices) in enumerate(series.items()):
        offset = -width / 2 + (0.08 * number if len(series) > 1 else 0)
        x = [ticks.index(format_value(points[i]["values"][key])) + offset for i in indices]
        y = [100 * summaries[i]["mean"] for i in indices]
        errors = [_error_bar(summaries[i]) for i in indices]
        axis.errorbar(
            x, y, yerr=np.array(errors).T, marker="o", capsize=4, label=label, linewidth=1.5
        )
        if best_index in indices:
            spot = indices.index(best_index)
            axis.plot(
                x[spot],
                y[spot],
                marker="*",
                markersize=16,
                color="gold",
                markeredgecolor="black",
                linestyle="none",
                zorder=5,
            )
    axis.set_xticks(range(len(ticks)), ticks)
    axis.set_xlabel(key)
    axis.set_ylabel("test accuracy (%)")
    axis.grid(alpha=0.3)
    if len(series) > 1 or others:
        axis.legend(fontsize="small")


def _error_bar(summary: dict) -> tuple[float, float]:
    """Below and above the mean, in points: the 95% interval, none for n = 1."""
    if summary["ci95"] is None:
        return (0.0, 0.0)
    return (
        100 * (summary["mean"] - summary["ci95"][0]),
        100 * (summary["ci95"][1] - summary["mean"]),
    )
