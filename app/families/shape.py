"""The shape of a model's data, known to the API (stored with every model version) and to the
workers' families (which build networks for it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What the data looks like; fixed for a model at training time and stored with it."""

    n_features: int
    n_classes: int

    def to_json(self) -> dict[str, int]:
        return {"n_features": self.n_features, "n_classes": self.n_classes}
