"""Model families, described without torch.

The API validates hyper-parameters and lists families without importing torch (DESIGN §6), so a
family is registered as a `FamilySpec`: its name, its config dataclass (plain Python, validated by
pydantic) and the dotted path of the torch implementation that workers import lazily.

Third-party families register a spec under the entry point group ``obliviate.families``.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.errors import sanitised_validation_errors

ENTRY_POINT_GROUP = "obliviate.families"


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
    # What the family trains on: "tabular" (feature and label columns) or "text" (a text
    # dataset's text column). A model's dataset must be of its family's kind.
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


class UnknownFamilyError(KeyError):
    pass


@lru_cache(maxsize=1)
def families() -> dict[str, FamilySpec]:
    found: dict[str, FamilySpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if isinstance(spec, FamilySpec):
            found[spec.name] = spec
    # Built-ins are always present, even when the package metadata is not installed
    # (running from a source checkout).
    from app.families import builtin

    for spec in builtin.BUILTIN_FAMILIES:
        found.setdefault(spec.name, spec)
    return found


def get_family(name: str) -> FamilySpec:
    try:
        return families()[name]
    except KeyError:
        raise UnknownFamilyError(name) from None
