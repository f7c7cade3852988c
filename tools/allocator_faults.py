"""Page faults and step time of the engine's CPU training step with glibc's malloc defaults and
with the engine's allocator setting (fashion_cnn.training.device.keep_freed_memory): the figures
docs/results/notebook.md quotes in "Where the CPU time went: page faults".

Each setting runs in its own fresh process (the setting is process-wide and cannot be undone),
alternating, so a drifting machine touches both alike. Run:
    .venv/bin/python tools/allocator_faults.py [--model cnn|resnet18|...] [--pairs 3]
It needs results/data/fashion_mnist.npz (snakemake ... results/data/fashion_mnist.npz).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))


def measure(model_name: str, preset: str, batch: int, steps: int, tuned: bool) -> dict:
    import numpy as np
    import torch
    from fashion_cnn.tools.benchmark.measure import Workload, engine_step
    from fashion_cnn.training.device import keep_freed_memory, set_threads

    setting = keep_freed_memory("auto" if tuned else "system")
    set_threads(2)
    arrays = np.load(ROOT / "results/data/fashion_mnist.npz")
    images, labels = arrays["train_images"][:8192], arrays["train_labels"][:8192]
    switches = {"channels_last": True, "compile": False, "bf16": False}
    workload = Workload(model_name, preset, batch, steps, warmup=10)
    batches, step, _ = engine_step(images, labels, workload, torch.device("cpu"), switches)
    for _ in range(10):
        step(*next(batches))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {
        "allocator": setting,
        "ms_per_step": 1000 * seconds / steps,
        "images_per_s": steps * batch / seconds,
        "faults_per_step": faults / steps,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--preset", default="none")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--child", choices=["system", "auto"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.model, args.preset, args.batch, args.steps, args.child == "auto")
        print(json.dumps(result))
        return
    from fashion_cnn.core.provenance import cpu_name

    print(f"{cpu_name()}, {args.model} preset {args.preset}, batch {args.batch}, 2 threads")
    print("system = glibc malloc defaults; auto = fashion_cnn.training.device.keep_freed_memory()")
    for pair in range(args.pairs):
        for child in ("system", "auto"):
            command = [sys.executable, __file__, *sys.argv[1:], "--child", child]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(
                f"pair {pair + 1} {child:>6}: {result['ms_per_step']:6.2f} ms/step, "
                f"{result['images_per_s']:6.0f} images/s, "
                f"{result['faults_per_step']:7.1f} page faults/step, "
                f"peak resident {result['max_rss_mib']:,.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
