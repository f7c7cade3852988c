"""The benchmark command: the chapter's loop vs the engine, eager vs ONNX Runtime, on real images.

Speed targets are not asserted here (they belong in docs/benchmarks.md); this checks that the
command measures what it says and writes the JSON and the Markdown table it promises.
"""

from __future__ import annotations

import json

from conftest import cli, flat


def test_benchmark_writes_json_and_markdown(tmp_path, prepared_data):
    json_path, markdown_path = tmp_path / "benchmark.json", tmp_path / "benchmark.md"
    result = cli(
        "benchmark",
        "--data", prepared_data,
        "--workloads", "cnn", "cnn_augmented",
        "--steps", "4", "--warmup", "1", "--repeats", "2",
        "--switches", "fp32", "channels_last",
        "--latency-repeats", "5",
        "--threads", "2",
        "--output-json", json_path,
        "--output-markdown", markdown_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(json_path.read_text())
    assert report["machine"]["device"] == "cpu" and report["settings"]["steps"] == 4
    assert set(report["training"]) == {"cnn", "cnn_augmented"}
    for row in report["training"].values():
        assert len(row["chapter_runs"]) == 2 and row["chapter_images_per_s"] > 0
        assert [entry["switches"] for entry in row["engine"]] == ["fp32", "channels_last"]
        for entry in row["engine"]:
            assert len(entry["runs"]) == 2 and entry["images_per_s"] > 0
            assert abs(entry["ratio"] - entry["images_per_s"] / row["chapter_images_per_s"]) < 1e-9
    assert set(report["inference"]) == {"cnn", "resnet18"}
    for runtimes in report["inference"].values():
        assert set(runtimes) == {"pytorch_eager", "onnxruntime"}
        for numbers in runtimes.values():
            assert 0 < numbers["batch1_latency_ms_p50"] <= numbers["batch1_latency_ms_p95"]
            assert numbers["batch256_images_per_s"] > 0
    markdown = markdown_path.read_text()
    assert "| cnn_augmented |" in markdown and "| resnet18 | onnxruntime |" in markdown
    assert f"{report['training']['cnn']['chapter_images_per_s']:,.0f}" in markdown
    assert markdown in result.stdout  # the table is printed too


def test_benchmark_names_an_unknown_switch(tmp_path, prepared_data):
    result = cli(
        "benchmark",
        "--data", prepared_data,
        "--workloads", "cnn",
        "--switches", "channels_last+fp16",
        "--output-json", tmp_path / "b.json",
        "--output-markdown", tmp_path / "b.md",
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown switch 'fp16'" in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b.json").exists()
