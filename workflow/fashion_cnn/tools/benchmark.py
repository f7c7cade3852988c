"""Benchmark: training images/s of the chapter's loop vs the engine, and ONNX Runtime vs eager.

(a) the chapter's loop, as the chapter writes it: a DataLoader over a dataset that turns one PIL
    image at a time into a tensor (plus the augmentation transforms), batch 64, a plain step loop;
(b) the project's engine: the dataset as one uint8 tensor on the device, whole batches converted
    and augmented there, the engine's own ``train_step``, with each engine switch measured.

Both train the same model with the same optimizer on the same real images; only the data path and
the engine switches differ. Results go to JSON and a Markdown table (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

WORKLOADS = {
    # name: (model, augmentation preset)
    "cnn": ("cnn", "none"),
    "cnn_augmented": ("cnn", "chapter"),
    "resnet18": ("resnet18", "none"),
    # opt-in (--workloads): the chapter's third exercise and the ViT from scratch
    "vit_small": ("vit_small", "none"),
    "vit_b16": ("vit_b16", "none"),
}
DEFAULT_WORKLOADS = ["cnn", "cnn_augmented", "resnet18"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fashion_cnn.config.validation import argument_type

    def counted(minimum):
        return argument_type({"type": "integer", "minimum": minimum, "maximum": 1_000_000}, int)

    parser.add_argument(
        "--data", default="results/data/fashion_mnist.npz", help="prepared dataset (.npz)"
    )
    parser.add_argument(
        "--workloads", nargs="+", default=DEFAULT_WORKLOADS, choices=list(WORKLOADS)
    )
    parser.add_argument(
        "--steps", type=counted(1), default=150, help="timed training steps per measurement"
    )
    parser.add_argument(
        "--warmup", type=counted(0), default=15, help="untimed steps before each measurement"
    )
    parser.add_argument(
        "--repeats",
        type=counted(1),
        default=3,
        help="measurements of each variant, interleaved; the median is reported",
    )
    parser.add_argument(
        "--batch-size", type=argument_type("experiments.*.batch_size", int), default=64
    )
    parser.add_argument("--device", type=argument_type("engine.device"), default="auto")
    parser.add_argument(
        "--threads",
        type=counted(0),
        default=0,
        help="PyTorch CPU threads (0 = every CPU this process may use: affinity mask, cgroup quota)",
    )
    parser.add_argument(
        "--switches",
        nargs="+",
        default=["auto"],
        help="engine switch sets to measure: 'auto' (the config defaults), 'all' (every combination "
        "of channels_last/bf16/compile that makes sense on the device) or names like "
        "'channels_last+bf16'",
    )
    parser.add_argument(
        "--contention",
        nargs="+",
        default=[],
        choices=list(COMPETITORS),
        help="competing processes that run for the whole measurement, one per name: 'spin' (a "
        "single-threaded busy loop, like a neighbour's script) or 'torch' (another training job "
        "with as many PyTorch threads as there are cores). E.g. --contention spin, or torch torch",
    )
    parser.add_argument(
        "--allocator",
        type=argument_type("engine.allocator"),
        default="auto",
        help="the engine's allocator setting (engine.allocator)",
    )
    parser.add_argument(
        "--chapter-allocator",
        type=argument_type("engine.allocator"),
        default="system",
        help="the allocator of the chapter's loop, which runs in a process of its own: system (the "
        "default: malloc's defaults, as the chapter's script runs) or auto (the engine's setting, "
        "to see how much of the engine's lead the allocator alone explains)",
    )
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the engine's step (first switch set) per workload: time per kind of "
        "operation and per convolution layer, achieved GFLOP/s against a large matrix product's",
    )
    parser.add_argument(
        "--latency-repeats", type=argument_type("export.latency_repeats", int), default=300
    )
    parser.add_argument("--output-json", default="results/benchmark/benchmark.json")
    parser.add_argument("--output-markdown", default="results/benchmark/benchmark.md")


# Competing processes for --contention: each busy until it is killed.
COMPETITORS = {
    "spin": "while True:\n    pass\n",
    "torch": (
        "import os, torch\n"
        "torch.set_num_threads(os.cpu_count())\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3),"
        " torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64 * 24 * 24, 10))\n"
        "optimizer = torch.optim.Adam(model.parameters())\n"
        "images, labels = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))\n"
        "while True:\n"
        "    optimizer.zero_grad()\n"
        "    torch.nn.functional.cross_entropy(model(images), labels).backward()\n"
        "    optimizer.step()\n"
    ),
}


class Contention:
    """Competing busy processes for the duration of a ``with`` block."""

    def __init__(self, names: list[str]):
        self.names, self.processes = names, []

    def __enter__(self):
        import os
        import subprocess
        import sys

        # the competitors are other people's jobs: the library defaults, whatever this one sets
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
        }
        for name in self.names:
            self.processes.append(
                subprocess.Popen([sys.executable, "-c", COMPETITORS[name]], env=environment)
            )
        if self.processes:
            time.sleep(3.0)  # let them start (the torch one imports torch) before anything is timed
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
            process.wait()


def machine_description(device) -> dict:
    import os

    import torch

    from fashion_cnn.core.provenance import cpu_name

    description = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def _switch_sets(requested: list[str], device) -> list[dict]:
    from fashion_cnn.config.validation import default_engine_settings
    from fashion_cnn.training.device import Switches

    cuda = device.type == "cuda"
    names = ("channels_last", "bf16", "compile", "cuda_graph")
    sets = []
    for request in requested:
        if request == "auto":
            sets.append(Switches.resolve(default_engine_settings(), device).__dict__)
        elif request == "all":
            for values in itertools.product([False, True], repeat=len(names)):
                chosen = dict(zip(names, values, strict=True))
                if chosen["bf16"] and not cuda:
                    continue  # bf16 autocast on a CPU without AMX is slower; measured separately if asked
                if chosen["cuda_graph"] and (not cuda or chosen["compile"]):
                    continue
                sets.append(chosen)
        else:
            # adapt: engine.shared_cores: adapt (fashion_cnn.training.threads) in the timed loop
            known = (*names, "adapt")
            chosen = dict.fromkeys(known, False)
            for part in request.split("+"):
                if part not in known and part != "fp32":
                    raise SystemExit(f"unknown switch '{part}'; use {', '.join(known)} or fp32")
                if part in known:
                    chosen[part] = True
            if chosen["cuda_graph"] and not cuda:
                raise SystemExit("the switch cuda_graph needs a CUDA device (--device cuda)")
            sets.append(chosen)
    unique = []
    for chosen in sets:
        if chosen not in unique:
            unique.append(chosen)
    return unique


def _label(switches: dict) -> str:
    on = [name for name, value in switches.items() if value]
    return "+".join(on) if on else "fp32"


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(batches, step, steps: int, warmup: int, device) -> float:
    """Images/s over ``steps`` steps after ``warmup`` untimed ones, from an endless batch iterator."""
    count = 0
    for _ in range(warmup):
        step(*next(batches))
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        step(images, labels)
        count += len(labels)
    _synchronize(device)
    return count / (time.perf_counter() - started)


def _model(name: str, device, channels_last: bool = False):
    import torch

    from fashion_cnn.models.catalog import build_model

    torch.manual_seed(0)
    model = build_model(name, {"output_softmax": False}).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def chapter_loop_rate(
    images, labels, model_name, preset, batch_size, steps, warmup, device
) -> float:
    """The chapter's loop: DataLoader + per-sample PIL transforms + a plain training step."""
    import torch

    from fashion_cnn.data.augment import get_policy, torchvision_transform
    from fashion_cnn.training.batches import ChapterDataset

    torch.backends.cudnn.benchmark = False  # PyTorch's default, as the chapter leaves it
    dataset = ChapterDataset(images, labels, torchvision_transform(get_policy(preset)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = _model(model_name, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def endless():
        while True:
            yield from loader

    def step(inputs, targets):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()

    return _timed(endless(), step, steps, warmup, device)


class ChapterProcess:
    """The chapter's loop, measured in a process of its own that the engine's process-wide
    settings never touch (``engine.allocator`` cannot be undone once set): a script as the
    chapter writes it runs with the C library's malloc defaults. Spawned, not forked (OpenMP's
    threads do not survive a fork); it loads the data itself and waits, idle, between
    measurements, so interleaving with the engine's measurements stays as it was."""

    def __init__(self, data: str, threads: int, allocator: str = "system"):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # an executor, not a Pool: a worker that fails to start raises here instead of respawning
        self.executor = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_chapter_process_start,
            initargs=(str(data), threads, allocator),
        )
        self.allocator = self.executor.submit(_chapter_process_allocator).result()

    def rate(self, model_name, preset, batch_size, steps, warmup, device) -> float:
        arguments = (model_name, preset, batch_size, steps, warmup, str(device))
        return self.executor.submit(_chapter_process_rate, *arguments).result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.executor.shutdown(cancel_futures=True)


_CHAPTER_DATA: dict = {}


def _chapter_process_start(data: str, threads: int, allocator: str) -> None:
    from fashion_cnn.data.dataset import load_prepared
    from fashion_cnn.training.device import keep_freed_memory, set_threads

    _CHAPTER_DATA["allocator"] = keep_freed_memory(allocator)
    set_threads(threads)
    arrays = load_prepared(data)
    _CHAPTER_DATA.update(images=arrays["train_images"], labels=arrays["train_labels"])


def _chapter_process_allocator() -> str:
    return _CHAPTER_DATA["allocator"]


def _chapter_process_rate(model_name, preset, batch_size, steps, warmup, device) -> float:
    import torch

    images, labels = _CHAPTER_DATA["images"], _CHAPTER_DATA["labels"]
    return chapter_loop_rate(
        images, labels, model_name, preset, batch_size, steps, warmup, torch.device(device)
    )


def engine_rate(
    images, labels, model_name, preset, batch_size, steps, warmup, device, switches: dict
) -> float:
    """The engine: device-resident uint8 data, batched augmentation, the engine's train_step;
    with the switch ``adapt``, its thread count chosen while it runs (engine.shared_cores)."""
    import torch

    from fashion_cnn.training.threads import ThreadTuner

    batches, step, _ = engine_step(images, labels, model_name, preset, batch_size, device, switches)
    if not switches.get("adapt") or device.type != "cpu":
        return _timed(batches, step, steps, warmup, device)
    threads = torch.get_num_threads()
    tuner = ThreadTuner(threads)

    def tuned(inputs, targets):
        step(inputs, targets)
        tuner.step(len(targets))

    try:
        return _timed(batches, tuned, steps, warmup, device)
    finally:
        log.info("%s %s: %s", model_name, _label(switches), tuner.describe())
        torch.set_num_threads(threads)


def engine_step(images, labels, model_name, preset, batch_size, device, switches: dict):
    """The engine's batches (an endless iterator), its training step, and the model."""
    import torch

    from fashion_cnn.data.augment import get_policy
    from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls
    from fashion_cnn.training.batches import DeviceBatches
    from fashion_cnn.training.engine import train_step
    from fashion_cnn.training.graphs import GraphedStep

    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the engine sets it
    generator = torch.Generator(device=device).manual_seed(0)
    source = DeviceBatches(
        images, labels, device, get_policy(preset), batch_size, generator, switches["channels_last"]
    )
    model = _model(model_name, device, switches["channels_last"])
    if device.type == "cpu":
        one_pixel_convolutions_as_matmuls(model)  # as the engine does
    forward = torch.compile(model) if switches["compile"] else model
    criterion = torch.nn.CrossEntropyLoss()
    if switches.get("cuda_graph"):
        optimizer = torch.optim.Adam(
            model.parameters(), lr=torch.tensor(1e-3, device=device), capturable=True
        )
        graphed = GraphedStep(forward, model, optimizer, criterion, switches["bf16"], batch_size)

        def step(inputs, targets):
            graphed(inputs, targets)
    else:
        # fused on a CPU, as the engine's Adam is (optim.FUSED_ON_CPU)
        fused = True if device.type == "cpu" else None
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)

        def step(inputs, targets):
            train_step(forward, optimizer, None, criterion, inputs, targets, switches["bf16"])

    def endless():
        while True:
            yield from source.batches(source.new_order(), 0)

    return endless(), step, model


def measure_workload(
    images, labels, name: str, switch_sets: list[dict], args, device, chapter: ChapterProcess
) -> dict:
    """The chapter's loop (in its own process) and the engine in every switch set, interleaved
    and repeated: a machine's speed drifts (turbo, neighbours, caches), and whatever runs first
    pays for warming up the allocator and oneDNN's kernel cache. Medians, with every run."""
    model_name, preset = WORKLOADS[name]
    shape = (model_name, preset, args.batch_size, args.steps, args.warmup, device)
    chapter_rates, engine_rates = [], [[] for _ in switch_sets]
    for repeat in range(args.repeats):
        chapter_rates.append(chapter.rate(*shape))
        for index, switches in enumerate(switch_sets):
            engine_rates[index].append(engine_rate(images, labels, *shape, switches))
        log.info(
            "%s repeat %d: chapter %.0f, engine %s",
            name,
            repeat + 1,
            chapter_rates[-1],
            [round(r[-1]) for r in engine_rates],
        )
    chapter = statistics.median(chapter_rates)
    row = {"chapter_images_per_s": chapter, "chapter_runs": chapter_rates, "engine": []}
    for switches, rates in zip(switch_sets, engine_rates, strict=True):
        rate = statistics.median(rates)
        row["engine"].append(
            {
                "switches": _label(switches),
                "images_per_s": rate,
                "runs": rates,
                "ratio": rate / chapter,
            }
        )
    return row


def profile_workload(images, labels, model_name, preset, batch_size, steps, device, switches):
    """Where the engine's step spends its time (fashion_cnn.tools.profiling), on the CPU."""
    import torch

    from fashion_cnn.tools import profiling

    batches, step, model = engine_step(
        images, labels, model_name, preset, batch_size, device, switches
    )
    example, _ = next(batches)
    flops = profiling.conv_flops(model, example)
    events = profiling.profile_step(step, batches, steps)
    peak = profiling.matmul_peak_gflops(torch.get_num_threads())
    return profiling.summarize_profile(events, flops, steps, batch_size, peak)


def inference_rates(images, model_name: str, device, threads: int, repeats: int) -> dict:
    """PyTorch eager vs ONNX Runtime: batch-1 latency p50/p95 and batch-256 throughput."""
    import numpy as np
    import torch

    from fashion_cnn.data.augment import to_float_batch
    from fashion_cnn.evaluation.export import export_model, latency_and_throughput, session

    model = _model(model_name, torch.device("cpu")).eval()
    batch = to_float_batch(torch.from_numpy(images[:256])).numpy()
    results = {}
    eager_model = model.to(device)

    @torch.inference_mode()
    def eager(inputs: np.ndarray):
        outputs = eager_model(torch.from_numpy(inputs).to(device))
        _synchronize(device)
        return outputs

    results["pytorch_eager"] = latency_and_throughput(eager, batch, repeats)
    eager_scores = eager(batch).float().cpu().numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_model(model.cpu(), path, opset=20)
        runtime = session(path, threads)
        results["onnxruntime"] = latency_and_throughput(
            lambda inputs: runtime.run(None, {"images": inputs}), batch, repeats
        )
        results["onnxruntime"]["providers"] = runtime.get_providers()
        # parity on the same 256 real images: ONNX Runtime (on its first provider) vs eager
        (onnx_scores,) = runtime.run(None, {"images": batch})
        results["onnxruntime"]["max_abs_difference"] = float(
            np.abs(onnx_scores - eager_scores).max()
        )
    return results


def markdown(result: dict) -> str:
    machine, settings = result["machine"], result.get("settings", {})
    lines = [
        f"Machine: {machine.get('gpu') or machine['cpu']} ({machine['cores']} cores, "
        f"{machine['torch_threads']} PyTorch threads), torch {machine['torch']}, device {machine['device']}  ",
        f"Command: `{result['command']}`  ",
        f"Competing processes: {', '.join(result.get('contention') or []) or 'none'}  ",
        f"Allocator: engine {settings.get('engine_allocator', 'not recorded')}; the chapter's "
        f"loop (a process of its own) {settings.get('chapter_allocator', 'not recorded')}  ",
        f"Date: {result['date']}",
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
    if result.get("inference"):
        lines += [
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
    text = "\n".join(lines) + "\n"
    if result.get("profile"):
        from fashion_cnn.tools.profiling import profile_markdown

        text += "".join(
            "\n" + profile_markdown(name, numbers) for name, numbers in result["profile"].items()
        )
    return text


def run_benchmark(args) -> dict:
    import sys

    import torch

    from fashion_cnn.core.files import write_json, write_text
    from fashion_cnn.data.dataset import load_prepared
    from fashion_cnn.training.device import (
        keep_freed_memory,
        resolve_device,
        set_threads,
        usable_cpus,
    )

    threads = set_threads(args.threads or usable_cpus()[0])
    allocator = keep_freed_memory(args.allocator)
    log.info("engine allocator: %s", allocator)
    device = resolve_device(args.device)
    arrays = load_prepared(args.data)
    images, labels = arrays["train_images"], arrays["train_labels"]
    result = {
        "command": "python -m fashion_cnn " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(device),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "engine_allocator": allocator,
        },
        "training": {},
    }
    switch_sets = _switch_sets(args.switches, device)
    result["contention"] = args.contention
    # the competitors run for every measurement, the chapter's loop's included
    chapter = ChapterProcess(args.data, threads, args.chapter_allocator)
    result["settings"]["chapter_allocator"] = chapter.allocator
    log.info("the chapter's loop runs in a process of its own; allocator: %s", chapter.allocator)
    with chapter, Contention(args.contention):
        for name in args.workloads:
            result["training"][name] = measure_workload(
                images, labels, name, switch_sets, args, device, chapter
            )
        if args.profile:
            result["profile"] = {
                name: profile_workload(
                    images,
                    labels,
                    *WORKLOADS[name],
                    args.batch_size,
                    args.steps,
                    device,
                    switch_sets[0],
                )
                for name in args.workloads
            }
        if not args.skip_inference:
            result["inference"] = {
                name: inference_rates(
                    images, name, device, torch.get_num_threads(), args.latency_repeats
                )
                for name in ("cnn", "resnet18")
            }
    write_json(args.output_json, result)
    table = markdown(result)
    write_text(args.output_markdown, table)
    print(table)
    print(
        json.dumps(
            {
                name: [round(e["ratio"], 2) for e in row["engine"]]
                for name, row in result["training"].items()
            }
        )
    )
    return result
