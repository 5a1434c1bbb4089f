"""What the mini-batch families (MLP, CNN) share: Adam over seeded mini-batches, softmax
probabilities and per-example cross-entropy. A subclass only says how to build its network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.engine.training import cross_entropy_per_example, fit_minibatches, softmax_proba


class MinibatchClassifier:
    name: str

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
