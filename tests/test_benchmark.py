"""The benchmark command: the chapter's loop vs the engine, eager vs ONNX Runtime, on real images.

Speed targets are not asserted here (they belong in docs/results/notebook.md); this checks that the
command measures what it says and writes the JSON and the Markdown table it promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli, flat
from fashion_cnn.results.ledger import publish_benchmark
from fashion_cnn.results.pages import BEGIN, END, rendered
from fashion_cnn.training.device import keep_freed_memory


@pytest.mark.slow
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
        env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(json_path.read_text())
    assert report["machine"]["device"] == "cpu" and report["settings"]["steps"] == 4
    assert report["machine"]["omp_wait_policy"] == "ACTIVE"  # the caller's choice is kept
    assert report["settings"]["chapter_omp_wait_policy"] == "ACTIVE"  # by the chapter's loop too
    # the chapter's loop in a process of its own with malloc's defaults; the engine's setting here
    assert report["settings"]["chapter_allocator"].startswith("system malloc defaults")
    assert report["settings"]["engine_allocator"] == keep_freed_memory("auto")
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
        assert runtimes["onnxruntime"]["max_abs_difference"] < 1e-4  # parity on 256 real images
    markdown = markdown_path.read_text()
    assert "| cnn_augmented |" in markdown
    assert "| resnet18 | ONNX Runtime (CPUExecutionProvider) |" in markdown
    assert f"{report['training']['cnn']['chapter_images_per_s']:,.0f}" in markdown
    assert markdown in result.stdout  # the table is printed too

    # published to a ledger: one speed record per workload and switch set, rendered with the
    # medians, the ratio and what the chapter's loop ran under
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    paths = publish_benchmark(json_path, {"name": "bench", "shared": False, "cpu": None}, ledger)
    assert sorted(path.name for path in paths) == [
        "bench.cnn.channels_last.json",
        "bench.cnn.fp32.json",
        "bench.cnn_augmented.channels_last.json",
        "bench.cnn_augmented.fp32.json",
    ]
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    page = rendered(ledger, readme, tmp_path / "pages")[tmp_path / "pages" / "speed.md"]
    entry = report["training"]["cnn"]["engine"][1]
    assert f"| **{entry['ratio']:.2f}x** | OpenMP wait policy ACTIVE" in page
    assert report["machine"]["cpu"] in page and report["command"] in page


@pytest.mark.slow
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


def _torch_default_threads() -> int:
    """torch's thread count in a fresh process with a clean environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    code = "import torch; print(torch.get_num_threads())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    return int(result.stdout)


def _processes_running(code: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and code in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_benchmark_under_contention_and_its_profile(tmp_path, prepared_data):
    """Competing busy processes run for the measurement and are gone after it (beside the
    engine with its threads chosen while it runs, the switch adapt); the profile of the engine's
    step adds up and counts each convolution's arithmetic from its shapes."""
    from fashion_cnn.tools.benchmark.arguments import COMPETITORS

    json_path = tmp_path / "benchmark.json"
    result = cli(
        "benchmark",
        "--data", prepared_data,
        "--workloads", "cnn",
        "--steps", "3", "--warmup", "1", "--repeats", "1",
        "--switches", "channels_last", "channels_last+adapt",
        "--skip-inference", "--contention", "spin", "--profile",
        "--output-json", json_path,
        "--output-markdown", tmp_path / "benchmark.md",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _processes_running(COMPETITORS["spin"]) == []
    report = json.loads(json_path.read_text())
    assert report["contention"] == ["spin"]
    assert report["machine"]["omp_wait_policy"] == "PASSIVE"  # what the command line sets
    # the chapter's loop as its readers run it: none of the command line's settings, torch's
    # default thread count (issue: a baseline slowed by our own settings is not the chapter's)
    assert report["settings"]["chapter_omp_wait_policy"] == "default"
    assert report["settings"]["chapter_threads"] == _torch_default_threads()
    assert "OpenMP wait policy default" in result.stdout
    assert "Competing processes: spin" in result.stdout
    # engine.shared_cores: adapt in the timed loop (tests/test_threads.py tests its choices)
    switches = [entry["switches"] for entry in report["training"]["cnn"]["engine"]]
    assert switches == ["channels_last", "channels_last+adapt"]
    assert "shared_cores: adapt: " in result.stderr
    profile = report["profile"]["cnn"]
    assert sum(profile["kinds_ms"].values()) == pytest.approx(profile["step_ms"])
    # what "other" is made of, by operation, the longest first: part of that kind's time
    others = list(profile["other_ms"].values())
    assert others == sorted(others, reverse=True) and sum(others) <= profile["kinds_ms"]["other"]
    assert {"convolution, forward", "convolution, backward"} <= set(profile["kinds_ms"])
    assert len(profile["layers"]) == 3  # the chapter's three convolutions
    # published, each record's note says what the engine ran under, and why, and its profile
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for path in publish_benchmark(json_path, {"name": "b", "shared": True, "cpu": None}, ledger):
        note = json.loads(path.read_text())["note"]
        assert "PASSIVE (benchmark of shared cores" in note and "competing processes: spin" in note
        assert f"convolutions {100 * profile['conv_share']:.0f}% at" in note
        assert f"{profile['matmul_peak_gflops']:.1f} GFLOP/s for a large fp32" in note
        assert "; of kind other: " in note
    first = next(row for row in profile["layers"] if row["weight"] == "32x1x3x3")
    n, _, h, w = (int(x) for x in first["input"].split("x"))
    # forward 2·N·C_out·H_out·W_out·C_in·k², backward the same again (no input gradient)
    assert first["mflop"] == pytest.approx(2 * 2 * n * 32 * (h - 2) * (w - 2) * 9 / 1e6)
    assert 0 < profile["conv_gflops"] < profile["matmul_peak_gflops"] * 2
    assert "| convolution, backward |" in result.stdout
