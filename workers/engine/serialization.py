"""Weights to and from bytes, as safetensors only.

Model files may come from storage that outlives the worker that wrote them; safetensors holds
raw tensors and a JSON header, so loading one can never execute code as a pickle could.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import torch
from safetensors.torch import load, save
from torch import nn

from workers.engine.families.base import ModelFamily, Shape


def state_to_bytes(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise weights (copied to CPU, contiguous) with optional string metadata."""
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"safetensors metadata must map str to str, got {key!r}: {value!r}")
    # Fresh copies, because safetensors refuses tensors that share storage (tied weights).
    tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in state_dict.items()}
    return save(tensors, metadata=metadata)


def bytes_to_state(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata back from `state_to_bytes` output."""
    state_dict = load(data)
    # The header is an 8-byte little-endian length followed by that much JSON; the tensors
    # were already validated by `load`, so only the metadata is read from it here.
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    metadata = header.get("__metadata__") or {}
    return state_dict, dict(metadata)


def load_network(family: ModelFamily, config: Any, shape: Shape, data: bytes) -> nn.Module:
    """A network of this family with the stored weights, on CPU, in eval mode."""
    state_dict, _ = bytes_to_state(data)
    network = family.build_network(config, shape)
    network.load_state_dict(state_dict, strict=True)
    return network.eval()
