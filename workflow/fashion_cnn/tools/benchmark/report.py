"""Running the benchmark (``python -m fashion_cnn benchmark``): the workloads measured under the
command line's settings, then the JSON record and the Markdown table."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys

import torch

from fashion_cnn.core.files import write_json, write_text
from fashion_cnn.core.provenance import git_commit
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.tools.benchmark.measure import (
    Bench,
    ChapterProcess,
    Contention,
    Workload,
    inference_rates,
    machine_description,
    measure_workload,
    profile_workload,
    switch_sets,
)
from fashion_cnn.tools.profiling import profile_markdown
from fashion_cnn.training.device import keep_freed_memory, resolve_device, set_threads, usable_cpus

log = logging.getLogger(__name__)


def run_benchmark(args: argparse.Namespace) -> dict:
    """Measure every workload, write the JSON and the table, print the table."""
    set_threads(args.threads or usable_cpus()[0])
    allocator = keep_freed_memory(args.allocator)
    log.info("engine allocator: %s", allocator)
    device = resolve_device(args.device)
    arrays = load_prepared(args.data)
    result = {
        "command": "python -m fashion_cnn " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit()["commit"],
        "machine": machine_description(device),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "engine_allocator": allocator,
        },
        "training": {},
        "contention": args.contention,
    }
    switches = switch_sets(args.switches, device)
    # the competitors run for every measurement, the chapter's loop's included
    chapter = ChapterProcess(args.data, args.chapter_allocator)
    result["settings"].update(
        chapter_allocator=chapter.allocator,
        chapter_omp_wait_policy=chapter.environment["omp_wait_policy"],
        chapter_threads=chapter.environment["threads"],
    )
    log.info(
        "the chapter's loop runs in a process of its own, in the caller's environment: %s",
        chapter.environment,
    )
    bench = Bench(arrays["train_images"], arrays["train_labels"], device, chapter)
    with chapter, Contention(args.contention):
        result.update(_measure(bench, args, switches))
    write_json(args.output_json, result)
    table = markdown(result)
    write_text(args.output_markdown, table)
    print(table)
    ratios = {
        name: [round(entry["ratio"], 2) for entry in row["engine"]]
        for name, row in result["training"].items()
    }
    print(json.dumps(ratios))
    return result


def _measure(bench: Bench, args: argparse.Namespace, switches: list[dict]) -> dict:
    """Training speed of each workload; its profile and inference speed where asked."""
    workloads = {name: Workload.named(name, args) for name in args.workloads}
    measured: dict = {
        "training": {
            name: measure_workload(bench, name, workload, switches, args.repeats)
            for name, workload in workloads.items()
        }
    }
    if args.profile:
        measured["profile"] = {
            name: profile_workload(bench, workload, switches[0])
            for name, workload in workloads.items()
        }
    if not args.skip_inference:
        threads = torch.get_num_threads()
        measured["inference"] = {
            name: inference_rates(bench.images, name, bench.device, threads, args.latency_repeats)
            for name in ("cnn", "resnet18")
        }
    return measured


def markdown(result: dict) -> str:
    """The benchmark's table: its machine and command, training, inference and profile."""
    text = "\n".join(_header(result) + _training_table(result) + _inference_table(result)) + "\n"
    if result.get("profile"):
        text += "".join(
            "\n" + profile_markdown(name, numbers) for name, numbers in result["profile"].items()
        )
    return text


def _header(result: dict) -> list[str]:
    machine, settings = result["machine"], result.get("settings", {})
    return [
        f"Machine: {machine.get('gpu') or machine['cpu']} ({machine['cores']} cores, "
        f"{machine['torch_threads']} PyTorch threads), torch {machine['torch']}, device {machine['device']}  ",
        f"Command: `{result['command']}`  ",
        f"Competing processes: {', '.join(result.get('contention') or []) or 'none'}  ",
        f"Allocator: engine {settings.get('engine_allocator', 'not recorded')}; the chapter's "
        f"loop (a process of its own) {settings.get('chapter_allocator', 'not recorded')}  ",
        f"The chapter's loop ran in the caller's environment: OpenMP wait policy "
        f"{settings.get('chapter_omp_wait_policy', 'not recorded')}, "
        f"{settings.get('chapter_threads', 'not recorded')} PyTorch threads; the engine: "
        f"{machine.get('omp_wait_policy', 'not recorded')}, {machine['torch_threads']}  ",
        f"Date: {result['date']}",
    ]


def _training_table(result: dict) -> list[str]:
    lines = [
        "",
        "| workload | chapter loop (images/s) | engine (images/s) | engine switches | ratio |",
        "|---|---:|---:|---|---:|",
    ]
    for name, row in result["training"].items():
        best = max(row["engine"], key=lambda entry: entry["images_per_s"])
        for entry in row["engine"]:
            mark = " (best)" if entry is best and len(row["engine"]) > 1 else ""
            lines.append(
                f"| {name} | {row['chapter_images_per_s']:,.0f} | {entry['images_per_s']:,.0f} | "
                f"{entry['switches']}{mark} | {entry['images_per_s'] / row['chapter_images_per_s']:.2f}x |"
            )
    return lines


def _inference_table(result: dict) -> list[str]:
    if not result.get("inference"):
        return []
    lines = [
        "",
        "| model | runtime | batch-1 latency p50 (ms) | p95 (ms) | batch-256 (images/s) | max. difference from eager |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, runtimes in result["inference"].items():
        for runtime, numbers in runtimes.items():
            if runtime == "onnxruntime":
                runtime = f"ONNX Runtime ({numbers['providers'][0]})"
                difference = f"{numbers['max_abs_difference']:.1e}"
            else:
                runtime, difference = "PyTorch eager", ""
            lines.append(
                f"| {name} | {runtime} | {numbers['batch1_latency_ms_p50']:.3f} | "
                f"{numbers['batch1_latency_ms_p95']:.3f} | {numbers['batch256_images_per_s']:,.0f} | "
                f"{difference} |"
            )
    return lines
