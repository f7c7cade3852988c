"""Training images/s of the engine's step under different OpenMP wait settings, quiet and beside a
single-threaded busy process: the figures docs/results/notebook.md quotes in "How OpenMP's threads
wait". Each setting runs in a fresh process (libgomp reads its environment once, at load), the
settings alternating, each `--pairs` times. CPU time is split into user and system (a sleeping
wait costs a futex system call per barrier). Run:
    .venv/bin/python tools/omp_wait.py [--model resnet_small --width 24] [--contention]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
    "default": {},
}


def child(model_name: str, width: int, batch: int, steps: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "workflow"))
    from fashion_cnn.models.catalog import build_model
    from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls
    from fashion_cnn.training.device import keep_freed_memory
    from fashion_cnn.training.engine import train_step

    keep_freed_memory("auto")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    arguments = {"output_softmax": False} | ({"width": width} if width else {})
    model = build_model(model_name, arguments)
    one_pixel_convolutions_as_matmuls(model)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)
    criterion = torch.nn.CrossEntropyLoss()
    images = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    for _ in range(5):
        train_step(model, optimizer, criterion, images, labels)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, criterion, images, labels)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "images_per_s": steps * batch / seconds,
        "user_s": after.ru_utime - before.ru_utime,
        "system_s": after.ru_stime - before.ru_stime,
        "wall_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--contention", action="store_true", help="beside a busy loop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.width, args.batch, args.steps)))
        return
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    }
    competitor = (
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.contention else None
    )
    try:
        print(
            f"{args.model} width {args.width or '-'} batch {args.batch}, 2 threads, "
            f"{'beside a busy loop' if args.contention else 'quiet'}"
        )
        for pair in range(args.pairs):
            for name, extra in SETTINGS.items():
                command = [sys.executable, __file__, *sys.argv[1:], "--child"]
                out = subprocess.run(
                    command, env=base | extra, capture_output=True, text=True, check=True
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(
                    f"pair {pair + 1} {name:>9}: {r['images_per_s']:6.0f} images/s, CPU "
                    f"user {r['user_s'] / r['wall_s']:.2f} system {r['system_s'] / r['wall_s']:.2f} "
                    "cores",
                    flush=True,
                )
    finally:
        if competitor:
            competitor.kill()


if __name__ == "__main__":
    main()
