"""The contract every model family implements (torch side).

A family is stateless: it turns a validated config (see app/families/builtin.py) into a network,
trains a network in place, and answers probabilities. Everything a family does is deterministic
under a seed on CPU, so an exact retrain can be compared with the original run.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

# The shape is part of a model version's row, so the app defines it; families build for it.
from app.families.shape import Shape

__all__ = ["ModelFamily", "Shape"]


@runtime_checkable
class ModelFamily(Protocol):
    name: str

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        """A freshly initialised network (call under torch.manual_seed for determinism)."""

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
        """Train `network` in place on (features float32 [n, d], labels int64 [n]).

        `epochs` overrides config.epochs (SISA trains each slice for a share of them). The
        mini-batch order comes from a generator seeded with `seed`, never the global RNG.
        """

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities [n, n_classes], in eval mode, without gradients."""

    def loss_per_example(
        self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy per example [n] (used by verification and membership inference)."""
