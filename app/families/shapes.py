"""The tensors of each built-in family's network, name → shape, computed without torch.

They mirror build_network in workers/engine/families/ (torch's state_dict names: a module's index
in its nn.Sequential, then weight or bias), so that the API can check an imported weights file
from its safetensors header alone. tests/test_inference.py compares them with the real networks.
"""

from __future__ import annotations

from typing import Any

Shapes = dict[str, tuple[int, ...]]


def _linear(prefix: str, inputs: int, outputs: int) -> Shapes:
    return {f"{prefix}weight": (outputs, inputs), f"{prefix}bias": (outputs,)}


def logistic(config: Any, n_features: int, n_classes: int) -> Shapes:
    return _linear("", n_features, n_classes)


def mlp(config: Any, n_features: int, n_classes: int) -> Shapes:
    shapes: Shapes = {}
    index, width = 0, n_features
    for hidden in config.hidden:
        shapes |= _linear(f"{index}.", width, hidden)
        index += 3 if config.dropout > 0 else 2  # Linear, ReLU (, Dropout)
        width = hidden
    return shapes | _linear(f"{index}.", width, n_classes)


def cnn(config: Any, n_features: int, n_classes: int) -> Shapes:
    channels, height, width = (int(size) for size in config.image_shape)
    if channels * height * width != n_features:
        raise ValueError(
            f"image_shape {channels}×{height}×{width} has {channels * height * width} pixels "
            f"but the data has {n_features} feature columns"
        )
    shapes: Shapes = {}
    index = 1  # after the Unflatten
    for out_channels in config.channels:
        shapes |= {f"{index}.weight": (out_channels, channels, 3, 3), f"{index}.bias": (out_channels,)}
        index += 2  # Conv2d, ReLU
        if height >= 2 and width >= 2:
            index += 1  # MaxPool2d
            height, width = height // 2, width // 2
        channels = out_channels
    return shapes | _linear(f"{index + 1}.", channels * height * width, n_classes)  # after the Flatten
