"""What a model family declares, without torch: `FamilySpec`, the object a family plugin registers
(app/families/registry.py finds them), and the error its hyper-parameters raise."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.errors import sanitised_validation_errors


@dataclass(frozen=True)
class FamilySpec:
    name: str
    # A pydantic dataclass with extra="forbid"; its fields are the family's hyper-parameters.
    config_class: type
    # "module:attribute" of an object implementing workers.engine.families.base.ModelFamily.
    implementation: str
    description: str = ""
    # Whether the family supports certified removal (convex loss with L2 regularisation).
    convex: bool = False
    # safetensors dtype codes the network computes in; imported weights of another dtype are
    # refused rather than silently cast.
    weight_dtypes: tuple[str, ...] = ("F32",)
    # (config, n_features, n_classes) → tensor name → shape of the network's weights, without
    # torch, so the API can check imported weights; None leaves that check to the implementation.
    parameter_shapes: Callable[[Any, int, int], dict[str, tuple[int, ...]]] | None = None
    # (config, n_features, n_classes) → the part of `parameter_shapes` that training updates (a
    # LoRA adapter over a frozen base), for the training-memory budget: frozen weights cost their
    # values alone, trained ones their gradients and optimiser state too. None: all of them train.
    trainable_shapes: Callable[[Any, int, int], dict[str, tuple[int, ...]]] | None = None
    # (config, n_features, n_classes) → values one training example keeps for the backward pass,
    # and (config, rows) → positions (records, or tokens) training processes: the training
    # budget's memory and compute (app/families/budget.py). None leaves that figure out.
    activations: Callable[[Any, int, int], int] | None = None
    positions_seen: Callable[[Any, int], int] | None = None
    # What the family trains on: "tabular" (feature and label columns), "text" (a text
    # dataset's text column) or "image" (an image dataset's images and labels). A model's
    # dataset must be of its family's kind.
    data_kind: str = "tabular"
    # The unlearning methods this family supports; None means every method of the tabular
    # families (app.models.schemas.TABULAR_METHODS).
    methods: tuple[str, ...] | None = None

    def parse_params(self, params: dict[str, Any] | None) -> Any:
        """Validate user hyper-parameters; raises FamilyParamsError with readable messages."""
        try:
            return TypeAdapter(self.config_class).validate_python(params or {})
        except ValidationError as exc:
            errors = sanitised_validation_errors(exc.errors(include_input=False, include_url=False))
            raise FamilyParamsError([{**error, "loc": [str(part) for part in error["loc"]]} for error in errors]) from None

    def dump_params(self, config: Any) -> dict[str, Any]:
        return asdict(config)

    def load_implementation(self) -> Any:
        module_name, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module_name), attr)


class FamilyParamsError(ValueError):
    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors))
        self.errors = errors
