"""Small convolutional classifier over images that arrive as flat, row-major pixel columns.

Each block is conv3×3 (padding 1) → ReLU → 2×2 max-pool; the pool is left out once the image
is narrower than 2 pixels in either direction, so deep stacks on small images still build.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.engine.families.base import Shape
from workers.engine.training import cross_entropy_per_example, fit_minibatches, softmax_proba


class CNNClassifier:
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

    def train(
        self,
        network: nn.Module,
        config: Any,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        seed: int,
        epochs: int | None = None,
    ) -> None:
        fit_minibatches(
            network,
            features,
            labels,
            epochs=config.epochs if epochs is None else epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            seed=seed,
        )

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return softmax_proba(network, features)

    def loss_per_example(
        self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return cross_entropy_per_example(network, features, labels)


CNNFamily = CNNClassifier()
