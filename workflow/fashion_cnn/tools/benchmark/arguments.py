"""The benchmark's command-line options and its workloads. Torch-free: the command line imports
it to build its parser, and must start without torch for the commands that do not train."""

from __future__ import annotations

import argparse

from fashion_cnn.config.schema import argument_type

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


def _counted(minimum: int):
    return argument_type({"type": "integer", "minimum": minimum, "maximum": 1_000_000}, int)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``python -m fashion_cnn benchmark``."""
    _workload_arguments(parser)
    _machine_arguments(parser)
    _output_arguments(parser)


def _workload_arguments(parser: argparse.ArgumentParser) -> None:
    """What is measured, and how long."""
    parser.add_argument(
        "--data", default="results/data/fashion_mnist.npz", help="prepared dataset (.npz)"
    )
    parser.add_argument(
        "--workloads", nargs="+", default=DEFAULT_WORKLOADS, choices=list(WORKLOADS)
    )
    parser.add_argument(
        "--steps", type=_counted(1), default=150, help="timed training steps per measurement"
    )
    parser.add_argument(
        "--warmup", type=_counted(0), default=15, help="untimed steps before each measurement"
    )
    parser.add_argument(
        "--repeats",
        type=_counted(1),
        default=3,
        help="measurements of each variant, interleaved; the median is reported",
    )
    parser.add_argument(
        "--batch-size", type=argument_type("experiments.*.batch_size", int), default=64
    )
    parser.add_argument(
        "--switches",
        nargs="+",
        default=["auto"],
        help="engine switch sets to measure: 'auto' (the config defaults), 'all' (every combination "
        "of channels_last/bf16/compile that makes sense on the device) or names like "
        "'channels_last+bf16'",
    )


def _machine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where it runs: device, threads, allocators and competing processes."""
    parser.add_argument("--device", type=argument_type("engine.device"), default="auto")
    parser.add_argument(
        "--threads",
        type=_counted(0),
        default=0,
        help="the engine's PyTorch CPU threads (0 = every CPU this process may use: affinity "
        "mask, cgroup quota); the chapter's loop keeps torch's default, as its readers run it",
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


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """What else is measured, and where the results go."""
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
