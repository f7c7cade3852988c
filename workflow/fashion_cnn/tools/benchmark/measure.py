"""Timing the workloads: the chapter's loop (in a process of its own), the engine's step in each
switch set, its profile, and eager vs ONNX Runtime inference; competing processes around them."""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import fashion_cnn
from fashion_cnn.config.schema import schema_at
from fashion_cnn.config.validation import default_engine_settings
from fashion_cnn.core.provenance import cpu_name
from fashion_cnn.data.augment import get_policy, to_float_batch, torchvision_transform
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.evaluation.export import export_model, latency_and_throughput, session
from fashion_cnn.models.catalog import build_model
from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls
from fashion_cnn.tools import profiling
from fashion_cnn.tools.benchmark.arguments import COMPETITORS, WORKLOADS
from fashion_cnn.training.batches import ChapterDataset, DeviceBatches
from fashion_cnn.training.device import Switches, keep_freed_memory
from fashion_cnn.training.engine import train_step
from fashion_cnn.training.graphs import GraphedStep
from fashion_cnn.training.threads import ThreadTuner

log = logging.getLogger(__name__)

Step = Callable[[torch.Tensor, torch.Tensor], object]


@dataclass(frozen=True)
class Workload:
    """What one measurement trains: a model, an augmentation preset, a batch size, and how many
    steps are timed after how many untimed ones."""

    model: str
    preset: str
    batch_size: int
    steps: int
    warmup: int

    @classmethod
    def named(cls, name: str, args) -> Workload:
        """A workload of ``WORKLOADS`` with the command line's batch size and steps."""
        model, preset = WORKLOADS[name]
        return cls(model, preset, args.batch_size, args.steps, args.warmup)


class Contention:
    """Competing busy processes for the duration of a ``with`` block."""

    def __init__(self, names: list[str]):
        self.names = names
        self.processes: list[subprocess.Popen] = []

    def __enter__(self):
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


def machine_description(device: torch.device) -> dict:
    description = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "omp_wait_policy_reason": fashion_cnn.WAIT_POLICY_REASON or "the package used as a library",
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


SWITCH_NAMES = ("channels_last", "bf16", "compile", "cuda_graph")


def switch_sets(requested: list[str], device: torch.device) -> list[dict]:
    """The engine switch sets ``--switches`` asks for, each once, in order."""
    sets = []
    for request in requested:
        if request == "auto":
            sets.append(Switches.resolve(default_engine_settings(), device).__dict__)
        elif request == "all":
            sets += _every_switch_set(device.type == "cuda")
        else:
            sets.append(_named_switch_set(request, device.type == "cuda"))
    unique: list[dict] = []
    for chosen in sets:
        if chosen not in unique:
            unique.append(chosen)
    return unique


def _every_switch_set(cuda: bool) -> list[dict]:
    sets = []
    for values in itertools.product([False, True], repeat=len(SWITCH_NAMES)):
        chosen = dict(zip(SWITCH_NAMES, values, strict=True))
        if chosen["bf16"] and not cuda:
            continue  # bf16 autocast on a CPU without AMX is slower; measured separately if asked
        if chosen["cuda_graph"] and (not cuda or chosen["compile"]):
            continue
        sets.append(chosen)
    return sets


def _named_switch_set(request: str, cuda: bool) -> dict:
    # adapt: engine.shared_cores: adapt (fashion_cnn.training.threads) in the timed loop
    known = (*SWITCH_NAMES, "adapt")
    chosen = dict.fromkeys(known, False)
    for part in request.split("+"):
        if part not in known and part != "fp32":
            raise SystemExit(f"unknown switch '{part}'; use {', '.join(known)} or fp32")
        if part in known:
            chosen[part] = True
    if chosen["cuda_graph"] and not cuda:
        raise SystemExit("the switch cuda_graph needs a CUDA device (--device cuda)")
    return chosen


def label(switches: dict) -> str:
    on = [name for name, value in switches.items() if value]
    return "+".join(on) if on else "fp32"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(batches: Iterator, step: Step, workload: Workload, device: torch.device) -> float:
    """Images/s over the workload's steps after its warm-up, from an endless batch iterator."""
    count = 0
    for _ in range(workload.warmup):
        step(*next(batches))
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(workload.steps):
        images, labels = next(batches)
        step(images, labels)
        count += len(labels)
    _synchronize(device)
    return count / (time.perf_counter() - started)


def _model(name: str, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, {"output_softmax": False}).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def chapter_loop_rate(images, labels, workload: Workload, device: torch.device) -> float:
    """The chapter's loop: DataLoader + per-sample PIL transforms + a plain training step."""
    torch.backends.cudnn.benchmark = False  # PyTorch's default, as the chapter leaves it
    transform = torchvision_transform(get_policy(workload.preset))
    dataset = ChapterDataset(images, labels, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=workload.batch_size, shuffle=True)
    model = _model(workload.model, device)
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

    return _timed(endless(), step, workload, device)


# What the command line sets for itself and its jobs, which the chapter's readers do not.
OUR_SETTINGS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def user_environment() -> dict[str, str]:
    """The environment the command line started in (before it set OpenMP's wait policy); used
    as a library, this process's environment without the settings the command line would add."""
    if fashion_cnn.USER_ENVIRONMENT is not None:
        return dict(fashion_cnn.USER_ENVIRONMENT)
    return {key: value for key, value in os.environ.items() if key not in OUR_SETTINGS}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ replaced for the ``with`` block (a spawned process inherits it at start)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class ChapterProcess:
    """The chapter's loop as its readers run it, measured in a process of its own: started in
    the user's environment (none of the command line's settings: OpenMP's default wait policy
    unless the user chose one, torch's default thread count) and untouched by the engine's
    process-wide settings (``engine.allocator`` cannot be undone once set; a script as the
    chapter writes it runs with the C library's malloc defaults). Spawned, not forked (OpenMP's
    threads do not survive a fork); it loads the data itself and waits, idle, between
    measurements, so interleaving with the engine's measurements stays as it was."""

    def __init__(self, data: str, allocator: str = "system"):
        with _environment(user_environment()):
            # an executor, not a Pool: a worker that fails to start raises here, not respawns
            self.executor = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_chapter_process_start,
                initargs=(str(data), allocator),
            )
            self.environment: dict = self.executor.submit(_chapter_process_environment).result()
        self.allocator = self.environment["allocator"]

    def rate(self, workload: Workload, device: torch.device) -> float:
        return self.executor.submit(_chapter_process_rate, workload, str(device)).result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.executor.shutdown(cancel_futures=True)


_CHAPTER_DATA: dict = {}


def _chapter_process_start(data: str, allocator: str) -> None:
    _CHAPTER_DATA["allocator"] = keep_freed_memory(allocator)
    arrays = load_prepared(data)
    _CHAPTER_DATA.update(images=arrays["train_images"], labels=arrays["train_labels"])


def _chapter_process_environment() -> dict:
    """What the chapter's process runs under: its allocator, OpenMP wait policy, threads."""
    return {
        "allocator": _CHAPTER_DATA["allocator"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "threads": torch.get_num_threads(),
    }


def _chapter_process_rate(workload: Workload, device: str) -> float:
    images, labels = _CHAPTER_DATA["images"], _CHAPTER_DATA["labels"]
    return chapter_loop_rate(images, labels, workload, torch.device(device))


def engine_rate(images, labels, workload: Workload, device: torch.device, switches: dict) -> float:
    """The engine: device-resident uint8 data, batched augmentation, the engine's train_step;
    with the switch ``adapt``, its thread count chosen while it runs (engine.shared_cores)."""
    batches, step, _ = engine_step(images, labels, workload, device, switches)
    if not switches.get("adapt") or device.type != "cpu":
        return _timed(batches, step, workload, device)
    threads = torch.get_num_threads()
    tuner = ThreadTuner(threads)

    def tuned(inputs, targets):
        step(inputs, targets)
        tuner.step(len(targets))

    try:
        return _timed(batches, tuned, workload, device)
    finally:
        log.info("%s %s: %s", workload.model, label(switches), tuner.describe())
        torch.set_num_threads(threads)


def engine_step(images, labels, workload: Workload, device: torch.device, switches: dict):
    """The engine's batches (an endless iterator), its training step, and the model."""
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the engine sets it
    source = DeviceBatches(
        images,
        labels,
        device,
        policy=get_policy(workload.preset),
        batch_size=workload.batch_size,
        generator=torch.Generator(device=device).manual_seed(0),
        channels_last=switches["channels_last"],
    )
    model = _model(workload.model, device, switches["channels_last"])
    if device.type == "cpu":
        one_pixel_convolutions_as_matmuls(model)  # as the engine does
    forward = torch.compile(model) if switches["compile"] else model

    def endless():
        while True:
            yield from source.batches(source.new_order(), 0)

    return endless(), _engine_train_step(forward, model, workload, device, switches), model


def _engine_train_step(forward, model, workload: Workload, device, switches: dict) -> Step:
    """Adam and cross-entropy as the engine steps them: one CUDA graph, or fused on a CPU."""
    criterion = torch.nn.CrossEntropyLoss()
    if switches.get("cuda_graph"):
        optimizer = torch.optim.Adam(
            model.parameters(), lr=torch.tensor(1e-3, device=device), capturable=True
        )
        return GraphedStep(
            forward,
            model,
            optimizer,
            criterion,
            bf16=switches["bf16"],
            batch_size=workload.batch_size,
        )
    # fused on a CPU, as the engine's Adam is (its registry entry's fused_on_cpu)
    fused = True if device.type == "cpu" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)

    def step(inputs, targets):
        train_step(forward, optimizer, criterion, inputs, targets, bf16=switches["bf16"])

    return step


@dataclass(frozen=True)
class Bench:
    """What every measurement shares: the images, the device, the chapter's process."""

    images: np.ndarray
    labels: np.ndarray
    device: torch.device
    chapter: ChapterProcess


def measure_workload(
    bench: Bench, name: str, workload: Workload, switches: list[dict], repeats: int
) -> dict:
    """The chapter's loop (in its own process) and the engine in every switch set, interleaved
    and repeated: a machine's speed drifts (turbo, neighbours, caches), and whatever runs first
    pays for warming up the allocator and oneDNN's kernel cache. Medians, with every run."""
    chapter_rates: list[float] = []
    engine_rates: list[list[float]] = [[] for _ in switches]
    for repeat in range(repeats):
        chapter_rates.append(bench.chapter.rate(workload, bench.device))
        for index, chosen in enumerate(switches):
            rate = engine_rate(bench.images, bench.labels, workload, bench.device, chosen)
            engine_rates[index].append(rate)
        log.info(
            "%s repeat %d: chapter %.0f, engine %s",
            name,
            repeat + 1,
            chapter_rates[-1],
            [round(r[-1]) for r in engine_rates],
        )
    chapter = statistics.median(chapter_rates)
    row: dict = {"chapter_images_per_s": chapter, "chapter_runs": chapter_rates, "engine": []}
    for chosen, rates in zip(switches, engine_rates, strict=True):
        rate = statistics.median(rates)
        row["engine"].append(
            {
                "switches": label(chosen),
                "images_per_s": rate,
                "runs": rates,
                "ratio": rate / chapter,
            }
        )
    return row


def profile_workload(bench: Bench, workload: Workload, switches: dict) -> dict:
    """Where the engine's step spends its time (fashion_cnn.tools.profiling), on the CPU."""
    batches, step, model = engine_step(bench.images, bench.labels, workload, bench.device, switches)
    example, _ = next(batches)
    flops = profiling.conv_flops(model, example)
    events = profiling.profile_step(step, batches, workload.steps)
    peak = profiling.matmul_peak_gflops(torch.get_num_threads())
    return profiling.summarize_profile(events, flops, workload.steps, workload.batch_size, peak)


def inference_rates(images, model_name: str, device, threads: int, repeats: int) -> dict:
    """PyTorch eager vs ONNX Runtime: batch-1 latency p50/p95 and batch-256 throughput."""
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
        export_model(model.cpu(), path, opset=schema_at("export.opset")["default"])
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
