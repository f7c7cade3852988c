"""One table of every experiment: our test accuracy beside the chapter's, cost, device, weights."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from fashion_cnn.engine import format_duration
from fashion_cnn.files import write_csv, write_text
from fashion_cnn.weights import FALLBACK_SOURCE, fallback_mark

log = logging.getLogger(__name__)

COLUMNS = [
    "experiment",
    "test_accuracy",
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
]


def read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def summary_rows(metrics_paths: list[Path], onnx_paths: list[Path]) -> list[dict]:
    rows = []
    for metrics_path, onnx_path in zip(metrics_paths, onnx_paths, strict=True):
        metrics, onnx = read_json(metrics_path), read_json(onnx_path)
        training = metrics["training"]
        rows.append(
            {
                "experiment": metrics["experiment"],
                "test_accuracy": metrics["test_accuracy"],
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
            }
        )
    return rows


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def display_rows(rows: list[dict]) -> list[list[str]]:
    """Rows for people: accuracy with its flag, durations and rates rounded."""
    shown = []
    for row in rows:
        accuracy = _percent(row["test_accuracy"])
        if row["weights_source"] == FALLBACK_SOURCE:
            accuracy += f" ({fallback_mark(row['chapter_accuracy'])})"
        shown.append(
            [
                row["experiment"],
                accuracy,
                _percent(row["chapter_accuracy"]),
                f"{row['parameters']:,}",
                str(row["epochs"]),
                format_duration(row["training_seconds"]),
                f"{row['training_images_per_s']:,.0f}",
                row["device"],
                row["weights_source"],
                f"{row['onnx_parity_max_abs_difference']:.1e}",
            ]
        )
    return shown


DISPLAY_HEADER = [
    "experiment",
    "test accuracy",
    "chapter",
    "parameters",
    "epochs",
    "training time",
    "images/s",
    "device",
    "weights",
    "ONNX max |diff|",
]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(DISPLAY_HEADER) + " |", "|" + "---|" * len(DISPLAY_HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in display_rows(rows)]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in DISPLAY_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
        for cells in display_rows(rows)
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fashion-cnn summary</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}</style></head><body>"
        "<h2>fashion-cnn: test accuracy of every experiment</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def write_summary(
    metrics_paths, onnx_paths, csv_path: Path, markdown_path: Path, html_path: Path
) -> list[dict]:
    rows = summary_rows([Path(p) for p in metrics_paths], [Path(p) for p in onnx_paths])
    write_csv(csv_path, COLUMNS, [[row[column] for column in COLUMNS] for row in rows])
    write_text(markdown_path, markdown_table(rows))
    write_text(html_path, html_table(rows))
    log.info("summary of %d experiments:\n%s", len(rows), markdown_table(rows))
    return rows
