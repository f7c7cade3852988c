"""Where ResNet-18's CPU training step goes, and what fused Adam saves (docs/results/notebook.md,
"ResNet-18 on this CPU"). Run from the repository root:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python tools/adam_on_cpu.py

The engine's step on random 28x28 images at batch 64, 2 threads: one-pixel convolutions as
matrix products, channels_last, Adam 1e-3. Prints the step and the optimizer step alone (ms, mean
of 15) for the default, foreach and fused Adam, twice each, then torch.profiler's top operations
of five default-Adam steps.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from fashion_cnn.models.architectures.resnet18 import resnet18_for_fashion  # noqa: E402
from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls  # noqa: E402


def setup(kind: str):
    torch.manual_seed(0)
    model = resnet18_for_fashion()
    one_pixel_convolutions_as_matmuls(model)
    model = model.to(memory_format=torch.channels_last)
    options = {} if kind == "default" else {kind: True}
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, **options)
    images = torch.randn(64, 1, 28, 28).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step, optimizer


def mean_ms(function, repeats: int = 15) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for kind in ("default", "foreach", "fused", "default", "foreach", "fused"):
        step, optimizer = setup(kind)
        for _ in range(5):
            step()
        print(
            f"{kind:8s} step {mean_ms(step):6.1f} ms   "
            f"optimizer step {mean_ms(optimizer.step):5.1f} ms"
        )
    step, _ = setup("default")
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(5):
            step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
