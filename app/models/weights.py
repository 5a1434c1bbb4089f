"""Checking an imported weights file without torch, from its safetensors header alone.

The file must be well-formed safetensors (an 8-byte little-endian header length, a JSON header,
tensors that exactly tile the data after it), hold only floating-point tensors, and hold exactly
the tensors of the family's network with their shapes (FamilySpec.tensor_shapes). The workers
load such a file into the network without surprises; nothing here needs torch (DESIGN §6).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from app.families.registry import FamilySpec

ITEM_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
# safetensors' own limit on the header (100 MB); past it no real file goes.
MAX_HEADER_BYTES = 100_000_000


def _tensor(info: Any, body: int) -> tuple[tuple[int, ...], int, int]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError("a tensor has no valid description in the header")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in ITEM_BYTES:
        raise ValueError("a tensor is not of a floating-point type (F16, BF16, F32, F64)")
    if not isinstance(shape, list) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise ValueError("a tensor has no valid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body):
        raise ValueError("a tensor lies outside the file")
    if offsets[1] - offsets[0] != math.prod(shape) * ITEM_BYTES[dtype]:
        raise ValueError("a tensor does not have the size its shape and dtype say")
    return tuple(shape), offsets[0], offsets[1]


def read_shapes(data: bytes) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of a safetensors file; ValueError if it is not one."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: too short")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError("not a safetensors file: the header length is past the end")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: the header is not an object")
    header.pop("__metadata__", None)
    body = len(data) - 8 - length
    shapes, spans = {}, []
    for name, info in header.items():
        shapes[name], start, end = _tensor(info, body)
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise ValueError("not a safetensors file: its tensors overlap or leave gaps")
        position = end
    if position != body:
        raise ValueError("not a safetensors file: data after the last tensor")
    return shapes


def check(spec: FamilySpec, config: Any, n_features: int, n_classes: int, data: bytes) -> None:
    """Raise ValueError unless `data` is safetensors that fits this family's network."""
    found = read_shapes(data)
    if spec.tensor_shapes is None:
        return
    expected = spec.tensor_shapes(config, n_features, n_classes)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(expected) & set(found) if expected[name] != found[name])
    if missing or extra or wrong:
        # Names from the file itself are only counted: the caller chose them.
        parts = [f"{label}: {', '.join(names[:5])}" for label, names in (("missing", missing), ("wrong shape", wrong)) if names]
        parts += [f"{len(extra)} unexpected tensors"] if extra else []
        raise ValueError(f"the weights do not fit a {spec.name} network with these params ({'; '.join(parts)})")
