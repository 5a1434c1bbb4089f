"""Small convolutional classifier over images that arrive as flat, row-major pixel columns.

Each block is conv3×3 (padding 1) → ReLU → 2×2 max-pool; the pool is left out once the image
is narrower than 2 pixels in either direction, so deep stacks on small images still build.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workers.engine.families.base import Shape
from workers.engine.families.minibatch import MinibatchClassifier


class CNNClassifier(MinibatchClassifier):
    name = "cnn_classifier"

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        channels, height, width = (int(size) for size in config.image_shape)
        if channels * height * width != shape.n_features:
            raise ValueError(
                f"image_shape {channels}×{height}×{width} has {channels * height * width} pixels "
                f"but the data has {shape.n_features} feature columns"
            )
        layers: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))]
        for out_channels in config.channels:
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            if height >= 2 and width >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        layers += [nn.Flatten(), nn.Linear(channels * height * width, shape.n_classes)]
        return nn.Sequential(*layers)


CNNFamily = CNNClassifier()
