"""Checks of an imported safetensors file that need no torch: a well-formed header, the tensor
names and shapes the family's network has, a dtype the family computes in, finite values.

The header is an 8-byte little-endian length and that much JSON (name → dtype, shape,
data_offsets); the tensors follow back to back. Problems name tensors by position and dtypes by
the format's own codes, never by text taken from the file."""

from __future__ import annotations

import json
import math
import re
import struct

import numpy as np

# safetensors dtype code → numpy dtype whose finiteness numpy can test; BF16 is read as its bits.
_FLOATS = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
          "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# Far above any header of the built-in families; a length beyond it is a damaged or hostile file.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# A header nests three deep (header → tensor → shape); parsing a hostile one nested 100,000 deep
# would exhaust the interpreter's recursion instead.
MAX_HEADER_DEPTH = 8
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class WeightsError(ValueError):
    """The file cannot be these weights; the message is safe to show to the client."""


def read_header(data: bytes) -> dict[str, dict]:
    if len(data) < 8:
        raise WeightsError("The weights file is not safetensors (too short).")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise WeightsError("The weights file is not safetensors (its header length is out of range).")
    raw = data[8:8 + length]
    if _depth(raw) > MAX_HEADER_DEPTH:
        raise WeightsError(f"The weights file is not safetensors (its header nests deeper than {MAX_HEADER_DEPTH}).")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsError("The weights file is not safetensors (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise WeightsError("The weights file is not safetensors (its header is not an object).")
    header.pop("__metadata__", None)
    return header


def _depth(raw: bytes) -> int:
    """How deep brackets nest in JSON text, outside its strings, without parsing it."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    steps = np.isin(brackets, (ord("["), ord("{"))).astype(np.int64) - np.isin(brackets, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def check(data: bytes, *, dtypes: tuple[str, ...], shapes: dict[str, tuple[int, ...]] | None) -> None:
    """Raise WeightsError unless `data` holds exactly the tensors `shapes` names (any names when
    None), each of one of `dtypes`, all finite."""
    header = read_header(data)
    body = memoryview(data)[8 + struct.unpack("<Q", data[:8])[0]:]
    spans = []
    for position, (name, info) in enumerate(sorted(header.items()), start=1):
        dtype, shape, offsets = fields(info, position)
        if dtype not in dtypes:
            raise WeightsError(f"Tensor {position} is {dtype}; this family uses {', '.join(dtypes)} weights.")
        start, stop = offsets
        if stop - start != math.prod(shape) * SIZES[dtype] or stop > len(body):
            raise WeightsError(f"Tensor {position}'s data does not match its shape.")
        spans.append((start, stop))
        if shapes is not None and tuple(shape) != shapes.get(name):
            raise WeightsError("The weights do not have the tensors or shapes of this family's network with these params.")
        check_finite(body[start:stop], dtype, position)
    if shapes is not None and set(header) != set(shapes):
        raise WeightsError("The weights do not have the tensors or shapes of this family's network with these params.")
    # As the safetensors format requires: the tensors cover the data exactly, without gaps.
    spans.sort()
    ends = [0] + [stop for _start, stop in spans]
    if [start for start, _stop in spans] != ends[:-1] or ends[-1] != len(body):
        raise WeightsError("The weights file is not safetensors (its tensors do not cover the data exactly).")


def fields(info, position: int) -> tuple[str, list[int], tuple[int, int]]:
    if not isinstance(info, dict):
        raise WeightsError(f"Tensor {position} has no valid description in the header.")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    valid = (
        isinstance(dtype, str) and dtype in SIZES
        and isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        and isinstance(offsets, list) and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets) and 0 <= offsets[0] <= offsets[1]
    )
    if not valid:
        raise WeightsError(f"Tensor {position} has no valid description in the header.")
    return dtype, shape, (offsets[0], offsets[1])


def check_finite(raw: memoryview, dtype: str, position: int) -> None:
    if dtype in _FLOATS:
        finite = bool(np.isfinite(np.frombuffer(raw, dtype=_FLOATS[dtype])).all())
    elif dtype == "BF16":
        # The upper half of a float32: all exponent bits set means infinite or NaN.
        finite = not bool(((np.frombuffer(raw, dtype="<u2") & 0x7F80) == 0x7F80).any())
    else:
        finite = True
    if not finite:
        raise WeightsError(f"Tensor {position} contains NaN or infinite values.")
