"""Fully connected classifier: Linear → ReLU (→ Dropout) per hidden layer, then a Linear head."""

from __future__ import annotations

from typing import Any

from torch import nn

from workers.engine.families.base import Shape
from workers.engine.families.minibatch import MinibatchClassifier


class MLPClassifier(MinibatchClassifier):
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


MLPFamily = MLPClassifier()
