"""ONNX export with a dynamic batch axis, checked by onnx.checker and by ONNX Runtime parity."""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from fashion_cnn.config.settings import ExportSettings
from fashion_cnn.core import provenance
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import atomic_path, write_json
from fashion_cnn.data.augment import to_float_batch
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.evaluation.evaluate import load_trained
from fashion_cnn.training.device import set_threads

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "images", "scores"


def export_model(model: torch.nn.Module, path: Path, opset: int) -> None:
    """torch.onnx.export (the torch.export-based exporter) with the batch axis dynamic.

    Exported with a batch of 2: a batch of 1 lets the tracer specialise the batch dimension.
    """
    model.eval()
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        onnx.checker.check_model(onnx.load(str(temporary)), full_check=True)


def session(path: Path, threads: int):
    """An ONNX Runtime session: the CUDA provider when it is there, else the CPU."""
    available = ort.get_available_providers()
    # TF32 off: ONNX Runtime's CUDA provider uses TF32 by default on Ampere and newer GPUs, whose
    # 10-bit mantissa moved a trained CNN's logits by 0.04 on an H200, far past the parity check
    providers = [
        ("CUDAExecutionProvider", {"use_tf32": 0}) if p == "CUDAExecutionProvider" else p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in available
    ]
    if "CUDAExecutionProvider" in available and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA and cuDNN in the nvidia-* wheels that torch brought
        ort.preload_dlls()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def time_calls(function, repeats: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def latency_and_throughput(run_batch, images: np.ndarray, repeats: int) -> dict:
    """Batch-1 latency (p50/p95, ms) and batch-256 throughput (images/s) of ``run_batch``."""
    one = images[:1]
    big = np.resize(images, (256, *images.shape[1:]))
    latencies = time_calls(lambda: run_batch(one), repeats)
    big_times = time_calls(lambda: run_batch(big), max(5, repeats // 20), warmup=3)
    return {
        "batch1_latency_ms_p50": 1000 * statistics.median(latencies),
        "batch1_latency_ms_p95": 1000 * percentile(latencies, 0.95),
        "batch256_images_per_s": 256 / statistics.median(big_times),
    }


def export_onnx(
    checkpoint_path: Path,
    data_path: Path,
    *,
    onnx_path: Path,
    report_path: Path,
    settings: ExportSettings,
    threads: int = 1,
) -> dict:
    """Export the checkpoint's model, check the graph, compare ONNX Runtime's scores with
    PyTorch's on the first test images and time it; write the report. A failed parity check
    stops with a paragraph (after the report is written, for its details)."""
    threads = set_threads(threads)
    checkpoint, model = load_trained(checkpoint_path)
    model = model.float()
    started = time.perf_counter()
    export_model(model, onnx_path, settings.opset)
    export_seconds = time.perf_counter() - started

    arrays = load_prepared(data_path)
    images = to_float_batch(torch.from_numpy(arrays["test_images"][: settings.parity_images]))
    runtime = session(onnx_path, threads)
    parity = _parity(model, runtime, images.numpy(), settings.parity_tolerance)

    def onnx_batch(batch):
        return runtime.run([OUTPUT_NAME], {INPUT_NAME: batch})

    timing = latency_and_throughput(onnx_batch, images.numpy(), settings.latency_repeats)
    report = {
        "experiment": checkpoint["experiment"],
        "onnx_file": str(onnx_path),
        "opset": settings.opset,
        "dynamic_batch_axis": True,
        "export_seconds": export_seconds,
        "checker": "onnx.checker.check_model(full_check=True) passed",
        "parity": parity,
        "onnxruntime": {"providers": runtime.get_providers(), "threads": threads, **timing},
        "provenance": provenance.provenance(),
    }
    write_json(report_path, report)
    log.info(
        "%s: ONNX parity on %d images: max |diff| %.2e, %d/%d identical predictions; "
        "batch-1 p50 %.3f ms, batch-256 %.0f images/s",
        checkpoint["experiment"],
        parity["images"],
        parity["max_abs_difference"],
        parity["identical_predictions"],
        parity["images"],
        timing["batch1_latency_ms_p50"],
        timing["batch256_images_per_s"],
    )
    _stop_unless_parity(checkpoint["experiment"], parity)
    return report


def _parity(model: torch.nn.Module, runtime, images: np.ndarray, tolerance: float) -> dict:
    """PyTorch's and ONNX Runtime's scores for the same images, in batches of 250."""
    with torch.inference_mode():
        expected = torch.cat(
            [model(torch.from_numpy(images[i : i + 250])) for i in range(0, len(images), 250)]
        ).numpy()
    actual = np.concatenate(
        [
            runtime.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + 250]})[0]
            for i in range(0, len(images), 250)
        ]
    )
    max_difference = float(np.abs(actual - expected).max())
    same_class = int((actual.argmax(1) == expected.argmax(1)).sum())
    return {
        "images": len(images),
        "max_abs_difference": max_difference,
        "tolerance": tolerance,
        "identical_predictions": same_class,
        "passed": max_difference <= tolerance and same_class == len(images),
    }


def _stop_unless_parity(experiment: str, parity: dict) -> None:
    """A failed parity check as one paragraph (the report is written first, for its details)."""
    if not parity["passed"]:
        raise UserError(
            f"ONNX Runtime disagrees with PyTorch for {experiment}: max |diff| "
            f"{parity['max_abs_difference']:.3g} (tolerance {parity['tolerance']:g}), "
            f"{parity['images'] - parity['identical_predictions']} of {parity['images']} "
            "predictions differ (details in this step's log). Check the model for operations the "
            "exporter translates differently; raise export.parity_tolerance only if the "
            "difference is expected (e.g. another opset)."
        )
