"""Read a ``.safetensors`` file (Hugging Face's format: an 8-byte little-endian header length, a
JSON header naming each tensor's dtype, shape and byte range, then the raw bytes) without the
safetensors package, and map Google's ViT checkpoint (google/vit-base-patch16-224's
``model.safetensors``) onto torchvision's ``vit_b_16`` keys.

The file is untrusted input: every header field is checked (size, dtypes, shapes against byte
ranges, ranges inside the file, no overlaps) before a byte of tensor data is read, and any problem
is one paragraph naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from fashion_cnn.core.errors import UserError

MAX_HEADER_BYTES = 100_000_000  # the format's own limit
DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8),
}


def _refuse(path: Path, problem: str) -> UserError:
    return UserError(
        f"The weights file {path} is not a usable .safetensors file: {problem}. Download it again "
        "(for ViT-B/16: google/vit-base-patch16-224's model.safetensors), or give a .pth state_dict."
    )


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise _refuse(path, f"it is {len(data)} bytes long, shorter than the header's length field")
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise _refuse(path, f"its header claims {size:,} bytes, more than the file holds")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, ValueError) as error:
        raise _refuse(path, f"its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise _refuse(path, "its header is not a mapping of tensor names")
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size :]
    tensors, ranges = {}, []
    for name, entry in header.items():
        try:
            dtype, width = DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _refuse(
                path, f"tensor {name!r} has no valid dtype ({', '.join(DTYPES)}), shape and offsets"
            ) from None
        if min(shape, default=1) < 0 or not 0 <= begin <= end <= len(body):
            raise _refuse(path, f"tensor {name!r} lies outside the file")
        if (end - begin) != width * int(np.prod(shape, dtype=np.int64)):
            raise _refuse(
                path, f"tensor {name!r}'s shape {shape} does not fit its {end - begin} bytes"
            )
        ranges.append((begin, end, name))
        chunk = bytearray(body[begin:end])
        tensors[name] = (
            torch.frombuffer(chunk, dtype=dtype).reshape(shape)
            if chunk
            else torch.zeros(shape, dtype=dtype)
        )
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:], strict=False):
        if begin < end:
            raise _refuse(path, f"tensors {first!r} and {second!r} overlap")
    return tensors


# Google's ViT (Hugging Face's ViTModel names) -> torchvision's VisionTransformer names.
_LAYER = re.compile(r"^(?:vit\.)?encoder\.layer\.(\d+)\.(.+)$")
_IN_LAYER = {
    "layernorm_before": "ln_1",
    "layernorm_after": "ln_2",
    "attention.output.dense": "self_attention.out_proj",
    "intermediate.dense": "mlp.0",
    "output.dense": "mlp.3",
}
_TOP = {
    "embeddings.cls_token": "class_token",
    "embeddings.position_embeddings": "encoder.pos_embedding",
    "embeddings.patch_embeddings.projection.weight": "conv_proj.weight",
    "embeddings.patch_embeddings.projection.bias": "conv_proj.bias",
    "layernorm.weight": "encoder.ln.weight",
    "layernorm.bias": "encoder.ln.bias",
}


def is_google_vit(state: dict) -> bool:
    return any(key.endswith("embeddings.cls_token") for key in state)


def google_vit_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Google's ViT tensors to torchvision's, joining query, key and value into the
    in_proj of torchvision's MultiheadAttention; the classifier and pooler are left out (the
    model's head is new)."""
    mapped: dict[str, torch.Tensor] = {}
    attention: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        short = key.removeprefix("vit.")
        if short in _TOP:
            mapped[_TOP[short]] = tensor
            continue
        match = _LAYER.match(key)
        if not match:
            continue  # classifier.*, pooler.*: not part of the encoder
        layer, rest = match.groups()
        prefix = f"encoder.layers.encoder_layer_{layer}."
        part = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
        if part:
            attention.setdefault(f"{prefix}self_attention.in_proj_{part[2]}", {})[part[1]] = tensor
            continue
        for theirs, ours in _IN_LAYER.items():
            if rest.startswith(theirs + "."):
                mapped[prefix + ours + rest[len(theirs) :]] = tensor
                break
    for key, parts in attention.items():
        if set(parts) == {"query", "key", "value"}:
            mapped[key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return mapped
