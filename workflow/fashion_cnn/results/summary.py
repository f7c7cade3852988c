"""One table of every experiment: our test accuracy (mean ± std over n seeds, with its 95%
interval) beside the chapter's, its calibration error and its accuracy under corruption, cost,
device, weights."""

from __future__ import annotations

import logging
from pathlib import Path

from fashion_cnn.core.files import read_json, write_csv, write_text
from fashion_cnn.core.text import FALLBACK_SOURCE, fallback_mark, format_duration
from fashion_cnn.results.reading import read_metrics
from fashion_cnn.results.stats import percent, percent_with_spread
from fashion_cnn.results.tables import html_page, markdown_table

log = logging.getLogger(__name__)

# beyond accuracy, over seeds (results.replicates.TRUST_MEASURES): the summary's columns
TRUST_COLUMNS = [
    "macro_f1",
    "top2_accuracy",
    "ece",
    "ece_before_temperature",
    "ece_after_temperature",
    "temperature",
    "nll",
    "brier",
    "corrupted_accuracy",
]
COLUMNS = [
    "experiment",
    "test_accuracy",
    "seeds_n",
    "test_accuracy_std",
    "test_accuracy_ci95_low",
    "test_accuracy_ci95_high",
    "seeds",
    "chapter_accuracy",
    "parameters",
    "epochs",
    "training_images",
    "training_seconds",
    "training_images_per_s",
    "device",
    "weights_source",
    "onnx_parity_max_abs_difference",
    "onnx_batch1_latency_ms_p50",
    "onnx_batch256_images_per_s",
    *TRUST_COLUMNS,
    "ece_std",
    "corrupted_accuracy_std",
    "clean_accuracy_corruption_images",
]


def summary_rows(metrics_paths: list[Path], onnx_paths: list[Path]) -> list[dict]:
    rows = []
    for metrics_path, onnx_path in zip(metrics_paths, onnx_paths, strict=True):
        metrics, onnx = read_metrics(metrics_path, over_seeds=True), read_json(onnx_path)
        training = metrics["training"]
        over_seeds = metrics["test_accuracy_over_seeds"]
        interval = over_seeds["ci95"] or [None, None]
        rows.append(
            {
                "experiment": metrics["experiment"],
                "test_accuracy": metrics["test_accuracy"],
                "seeds_n": over_seeds["n"],
                "test_accuracy_std": over_seeds["std"],
                "test_accuracy_ci95_low": interval[0],
                "test_accuracy_ci95_high": interval[1],
                "seeds": " ".join(str(seed) for seed in metrics["seeds"]),
                "over_seeds": over_seeds,
                "chapter_accuracy": metrics["chapter_accuracy"],
                "parameters": metrics["parameters"],
                "epochs": training["epochs"],
                "training_images": training["images"],
                "training_seconds": training["seconds"],
                "training_images_per_s": training["images_per_s"],
                "device": training["device"],
                "weights_source": metrics["weights_source"],
                "onnx_parity_max_abs_difference": onnx["parity"]["max_abs_difference"],
                "onnx_batch1_latency_ms_p50": onnx["onnxruntime"]["batch1_latency_ms_p50"],
                "onnx_batch256_images_per_s": onnx["onnxruntime"]["batch256_images_per_s"],
                **_trust_columns(metrics),
            }
        )
    return rows


def _trust_columns(metrics: dict) -> dict:
    trust = metrics["trust_over_seeds"]
    columns = {name: trust[name]["mean"] for name in TRUST_COLUMNS}
    columns["ece_std"] = trust["ece"]["std"]
    columns["corrupted_accuracy_std"] = trust["corrupted_accuracy"]["std"]
    columns["clean_accuracy_corruption_images"] = metrics["robustness_over_seeds"]["none"]["0"][
        "mean"
    ]
    columns["trust"] = trust
    columns["robustness_over_seeds"] = metrics["robustness_over_seeds"]  # for the plot
    return columns


def display_rows(rows: list[dict]) -> list[list[str]]:
    """Rows for people: accuracy with its flag, durations and rates rounded."""
    shown = []
    for row in rows:
        accuracy = percent_with_spread(row["over_seeds"])
        if row["weights_source"] == FALLBACK_SOURCE:
            accuracy += f" ({fallback_mark(row['chapter_accuracy'])})"
        shown.append(
            [
                row["experiment"],
                accuracy,
                percent(row["chapter_accuracy"]),
                f"{row['parameters']:,}",
                str(row["epochs"]),
                format_duration(row["training_seconds"]),
                f"{row['training_images_per_s']:,.0f}",
                row["device"],
                row["weights_source"],
                f"{row['onnx_parity_max_abs_difference']:.1e}",
                f"{percent_with_spread(row['trust']['ece'])}; "
                f"{percent(row['ece_before_temperature'])} → "
                f"{percent(row['ece_after_temperature'])}",
                f"{percent_with_spread(row['trust']['corrupted_accuracy'])} "
                f"(clean {percent(row['clean_accuracy_corruption_images'])})",
            ]
        )
    return shown


DISPLAY_HEADER = [
    "experiment",
    "test accuracy (mean ± std, n seeds)",
    "chapter",
    "parameters",
    "epochs",
    "training time",
    "images/s",
    "device",
    "weights",
    "ONNX max |diff|",
    "calibration error (ECE); with temperature scaling, before → after on the same images",
    "accuracy under corruption",
]


def write_summary(
    metrics_paths, onnx_paths, csv_path: Path, markdown_path: Path, html_path: Path
) -> list[dict]:
    rows = summary_rows([Path(p) for p in metrics_paths], [Path(p) for p in onnx_paths])
    write_csv(csv_path, COLUMNS, [[row[column] for column in COLUMNS] for row in rows])
    shown = display_rows(rows)
    write_text(markdown_path, markdown_table(DISPLAY_HEADER, shown))
    heading = "fashion-cnn: test accuracy of every experiment"
    write_text(html_path, html_page("fashion-cnn summary", heading, DISPLAY_HEADER, shown))
    log.info("summary of %d experiments:\n%s", len(rows), markdown_table(DISPLAY_HEADER, shown))
    return rows
