"""ONNX export: a dynamic batch axis, onnx.checker, and ONNX Runtime parity on real test images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import base_config, tiny_training_job
from fashion_cnn.config.settings import ExportSettings
from fashion_cnn.data.augment import to_float_batch
from fashion_cnn.evaluation.export import export_onnx
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from fashion_cnn.training.engine import train_model


@pytest.fixture(scope="module", params=[False, True], ids=["logits", "chapter softmax"])
def trained(request, tmp_path_factory, prepared_data):
    folder = tmp_path_factory.mktemp("export")
    config = base_config()
    job = tiny_training_job(
        folder, prepared_data, threads=2, train_subset=512, epochs=1, output_softmax=request.param
    )
    train_model(job)
    settings = ExportSettings.from_dict(config["export"]).replace(latency_repeats=20)
    export_onnx(
        job.model_path,
        prepared_data,
        onnx_path=folder / "model.onnx",
        report_path=folder / "onnx_check.json",
        settings=settings,
        threads=2,
    )
    return folder


def test_exported_graph_is_valid_with_a_dynamic_batch_axis(trained):
    graph = onnx.load(str(trained / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    batch_dimension = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dimension.dim_param and not batch_dimension.dim_value
    assert graph.opset_import[0].version == 20


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_onnx_runtime_matches_pytorch_on_real_images_at_any_batch(trained, arrays, batch):
    model = model_from_checkpoint(load_checkpoint(trained / "model.pt"))
    images = to_float_batch(torch.from_numpy(arrays["test_images"][:batch]))
    session = ort.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        expected = model(images).numpy()
    assert actual.shape == (batch, 10)
    assert np.abs(actual - expected).max() < 1e-4
    assert np.array_equal(actual.argmax(1), expected.argmax(1))


def test_check_report_records_parity_and_speed(trained):
    report = json.loads((trained / "onnx_check.json").read_text())
    parity = report["parity"]
    assert parity["images"] == 1000 and parity["identical_predictions"] == 1000 and parity["passed"]
    assert 0 <= parity["max_abs_difference"] <= 1e-4
    runtime = report["onnxruntime"]
    assert runtime["providers"][-1] == "CPUExecutionProvider"
    assert runtime["batch1_latency_ms_p50"] > 0 and runtime["batch256_images_per_s"] > 0
    assert runtime["batch1_latency_ms_p95"] >= runtime["batch1_latency_ms_p50"]


def test_the_small_resnet_trains_exports_and_matches_in_onnx_runtime(tmp_path, prepared_data):
    """The frontier's residual network through the loop (EMA, flip TTA, erasing) and the export:
    the skip connections' additions survive into the graph, and the parity check passes."""
    config = base_config()
    job = tiny_training_job(
        tmp_path,
        prepared_data,
        threads=2,
        model="resnet_small",
        width=8,
        train_subset=256,
        epochs=1,
        augmentation="flip_crop_erase",
        ema_decay=0.9,
        test_time_flip=True,
    )
    train_model(job)
    export_onnx(
        job.model_path,
        prepared_data,
        onnx_path=tmp_path / "model.onnx",
        report_path=tmp_path / "onnx_check.json",
        settings=ExportSettings.from_dict(config["export"]).replace(
            latency_repeats=5, parity_images=200
        ),
        threads=2,
    )
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert sum(node.op_type == "Add" for node in graph.graph.node) >= 2
    parity = json.loads((tmp_path / "onnx_check.json").read_text())["parity"]
    assert parity["passed"] and parity["images"] == 200 and parity["max_abs_difference"] <= 1e-4
