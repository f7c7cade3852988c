"""Training images/s of the frontier and 500-label candidate networks in a bare timing loop
(batch 256, channels_last, fused AdamW, fp32 and bf16 autocast, 2 threads): the figures
docs/benchmarks.md quotes for resnet_small and cnn_bn. Run: .venv/bin/python docs/model_throughput.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn.models import build_model, one_pixel_convolutions_as_matmuls  # noqa: E402

CANDIDATES = [
    ("cnn_bn", {"width": 16}),
    ("cnn_bn", {"width": 32}),
    ("resnet_small", {"width": 16}),
    ("resnet_small", {"width": 24}),
]


def images_per_second(name: str, arguments: dict, bf16: bool, steps: int = 8) -> float:
    torch.manual_seed(0)
    model = build_model(name, arguments)
    one_pixel_convolutions_as_matmuls(model)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)
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
    torch.set_num_threads(2)
    for name, arguments in CANDIDATES:
        for bf16 in (False, True):
            rate = images_per_second(name, arguments, bf16)
            print(name, arguments, "bf16" if bf16 else "fp32", f"{rate:.0f} images/s", flush=True)
