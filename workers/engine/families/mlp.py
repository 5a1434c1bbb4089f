"""Fully connected classifier: Linear → ReLU (→ Dropout) per hidden layer, then a Linear head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.engine.families.base import Shape
from workers.engine.training import cross_entropy_per_example, fit_minibatches, softmax_proba


class MLPClassifier:
    name = "mlp_classifier"

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        layers: list[nn.Module] = []
        width = shape.n_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, shape.n_classes))
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


MLPFamily = MLPClassifier()
