"""Training images/s of the frontier and 500-label candidate networks in a bare timing loop
(batch 256, channels_last, fused AdamW, fp32 and bf16 autocast, 2 threads): the figures
docs/results/notebook.md quotes for resnet_small and cnn_bn. Run: .venv/bin/python tools/model_throughput.py
(``--allocator system`` leaves glibc's malloc as it is, as before ``engine.allocator`` existed;
``--only resnet_small:24`` times one network; ``--precision bf16`` one precision; ``--optimizer muon``
another entry of the optimizer registry, fused where the entry says).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn.models.catalog import build_model  # noqa: E402
from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls  # noqa: E402
from fashion_cnn.training.device import keep_freed_memory  # noqa: E402
from fashion_cnn.training.optim import OPTIMIZERS  # noqa: E402

CANDIDATES = [
    ("cnn_bn", {"width": 16}),
    ("cnn_bn", {"width": 32}),
    ("resnet_small", {"width": 16}),
    ("resnet_small", {"width": 24}),
]


def images_per_second(
    name: str, arguments: dict, bf16: bool, steps: int = 8, optimizer_name: str = "adamw"
) -> float:
    torch.manual_seed(0)
    model = build_model(name, arguments)
    one_pixel_convolutions_as_matmuls(model)
    model = model.to(memory_format=torch.channels_last)
    entry = OPTIMIZERS.get(optimizer_name)
    fused = {"fused": True} if entry.fused_on_cpu else {}
    optimizer = entry.build(model.parameters(), 1e-3, 0.01, **fused)
    images = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (256,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images)
        loss = torch.nn.functional.cross_entropy(outputs.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 256 / (time.perf_counter() - started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocator", choices=["auto", "system"], default="auto")
    parser.add_argument("--only", help="one network, NAME:WIDTH (e.g. resnet_small:24)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="one precision only")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS.names())
    options = parser.parse_args()
    print("allocator:", keep_freed_memory(options.allocator), flush=True)
    torch.set_num_threads(2)
    candidates = CANDIDATES
    if options.only:
        name, width = options.only.split(":")
        candidates = [(name, {"width": int(width)})]
    precisions = [options.precision == "bf16"] if options.precision else [False, True]
    for name, arguments in candidates:
        for bf16 in precisions:
            rate = images_per_second(name, arguments, bf16, options.steps, options.optimizer)
            precision = "bf16" if bf16 else "fp32"
            print(name, arguments, precision, options.optimizer, f"{rate:.0f} images/s", flush=True)
