"""Where a training step's time goes on this machine: ``python -m fashion_cnn benchmark --profile``.

For each workload it runs the engine's step under ``torch.profiler`` and reports (1) the time per
kind of operation (convolutions forward and backward, batch norm, the optimizer, ...), (2) every
convolution layer (by its input shape) with its time, its arithmetic (2 x N x C_out x H_out x W_out
x C_in/groups x k_h x k_w floating-point operations forward; twice that backward, for the input
and the weight gradients) and the rate it achieved, and (3) the machine's own ceiling for fp32
arithmetic on the same threads: a large matrix product. How far the convolutions stay below that
ceiling, and which layers, is what limits the step.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

# operation name prefix -> kind, first match wins (by self time, so the kinds add up to the step)
KINDS = [
    ("aten::convolution_backward", "convolution, backward"),
    ("aten::mkldnn_convolution_backward", "convolution, backward"),
    ("aten::_slow_conv2d_backward", "convolution, backward"),
    ("aten::mkldnn_convolution", "convolution, forward"),
    ("aten::_slow_conv2d", "convolution, forward"),
    ("aten::_convolution", "convolution, forward"),
    ("aten::convolution", "convolution, forward"),
    ("aten::native_batch_norm_backward", "batch norm, backward"),
    ("aten::native_batch_norm", "batch norm, forward"),
    ("aten::_foreach_", "optimizer (Adam)"),
    ("aten::_fused_adam", "optimizer (Adam)"),  # fused on a CPU (the engine's)
    ("aten::max_pool2d_with_indices_backward", "pooling, backward"),
    ("aten::max_pool2d", "pooling, forward"),
    ("aten::threshold_backward", "ReLU, backward"),
    ("aten::relu", "ReLU, forward"),
    ("aten::clamp_min", "ReLU, forward"),
    ("aten::addmm", "fully connected"),
    ("aten::mm", "fully connected"),
]


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a large square matrix product: this machine's practical ceiling."""
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def conv_flops(model, example) -> dict:
    """Forward FLOPs of the Conv2d layers, keyed by (input shape, weight shape), from one forward
    pass; layers of the same shapes are added up (the profiler cannot tell them apart either)."""
    flops: dict[tuple, float] = defaultdict(float)
    order: list[tuple] = []

    def hook(module, inputs, output):
        n, c_out, h, w = output.shape
        k_h, k_w = module.kernel_size
        key = (tuple(inputs[0].shape), tuple(module.weight.shape))
        flops[key] += 2 * n * c_out * h * w * (module.in_channels // module.groups) * k_h * k_w
        order.append(key)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        model(example)
    for handle in handles:
        handle.remove()
    return {"per_layer": dict(flops), "first": order[0] if order else None}


# How many of the operations of kind "other" a profile names, the longest first.
OTHERS_SHOWN = 6


def profile_step(step, batches, steps: int) -> list:
    """Profiler events of ``steps`` training steps (after 5 untimed ones)."""
    for _ in range(5):
        step(*next(batches))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(steps):
            step(*next(batches))
    return profiler.key_averages(group_by_input_shape=True)


def summarize_profile(events, flops: dict, steps: int, batch_size: int, peak: float) -> dict:
    """Time per kind of operation and per convolution layer, with achieved GFLOP/s."""
    kinds: dict[str, float] = defaultdict(float)
    others: dict[str, float] = defaultdict(float)  # the operations of kind "other", by name
    total = 0.0
    times: dict[tuple, dict] = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    for event in events:
        self_ms = event.self_cpu_time_total / 1000 / steps
        total += self_ms
        kind = next((k for prefix, k in KINDS if event.key.startswith(prefix)), "other")
        kinds[kind] += self_ms
        if kind == "other":
            others[event.key] += self_ms
        shapes = [tuple(shape) for shape in event.input_shapes or []]
        if event.key == "aten::convolution" and len(shapes) >= 2:
            times[(shapes[0], shapes[1])]["forward_ms"] += event.cpu_time_total / 1000 / steps
        elif event.key == "aten::convolution_backward" and len(shapes) >= 3:
            times[(shapes[1], shapes[2])]["backward_ms"] += event.cpu_time_total / 1000 / steps
    rows = []
    for key, forward in flops["per_layer"].items():
        if key not in times:
            continue
        # backward computes the weight and the input gradients; the first layer needs no input's
        backward = forward * (1 if key == flops["first"] else 2)
        ms = times[key]["forward_ms"] + times[key]["backward_ms"]
        rows.append(
            {
                "input": "x".join(map(str, key[0])),
                "weight": "x".join(map(str, key[1])),
                "forward_ms": times[key]["forward_ms"],
                "backward_ms": times[key]["backward_ms"],
                "mflop": (forward + backward) / 1e6,
                "gflops": (forward + backward) / ms / 1e6 if ms else 0.0,
            }
        )
    rows.sort(key=lambda r: -(r["forward_ms"] + r["backward_ms"]))
    conv_ms = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    conv_mflop = sum(r["mflop"] for r in rows)
    return {
        "step_ms": total,
        "images_per_s": batch_size / total * 1000 if total else 0.0,
        "kinds_ms": dict(sorted(kinds.items(), key=lambda item: -item[1])),
        "other_ms": dict(sorted(others.items(), key=lambda item: -item[1])[:OTHERS_SHOWN]),
        "layers": rows,
        "conv_share": conv_ms / total if total else 0.0,
        "conv_gflops": conv_mflop / conv_ms if conv_ms else 0.0,
        "matmul_peak_gflops": peak,
    }


def profile_markdown(name: str, result: dict) -> str:
    lines = [
        f"### {name}: one training step, {result['step_ms']:.1f} ms under the profiler "
        f"({result['images_per_s']:,.0f} images/s)",
        "",
        f"Convolutions take {100 * result['conv_share']:.0f}% of the step and achieve "
        f"{result['conv_gflops']:.1f} GFLOP/s; a large fp32 matrix product on the same threads "
        f"reaches {result['matmul_peak_gflops']:.1f} GFLOP/s. The longest operations of kind "
        "other: "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in result.get("other_ms", {}).items())
        + ".",
        "",
        "| kind of operation | ms per step | share |",
        "|---|---:|---:|",
    ]
    for kind, ms in result["kinds_ms"].items():
        lines.append(f"| {kind} | {ms:.2f} | {100 * ms / result['step_ms']:.0f}% |")
    lines += [
        "",
        "| convolution input (NxCxHxW) | weight | forward ms | backward ms | MFLOP | GFLOP/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["layers"]:
        lines.append(
            f"| {row['input']} | {row['weight']} | {row['forward_ms']:.2f} | "
            f"{row['backward_ms']:.2f} | {row['mflop']:.0f} | {row['gflops']:.1f} |"
        )
    return "\n".join(lines) + "\n"
