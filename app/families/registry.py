"""Model families, described without torch.

The API validates hyper-parameters and lists families without importing torch (docs/architecture.md, "Layers and packages"), so a
family is registered as a `FamilySpec`: its name, its config dataclass (plain Python, validated by
pydantic) and the dotted path of the torch implementation that workers import lazily.

Third-party families register a spec under the entry point group ``obliviate.families``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from app.families import builtin
from app.families.spec import FamilyParamsError, FamilySpec

__all__ = [
    "ENTRY_POINT_GROUP", "FamilyParamsError", "FamilySpec", "UnknownFamilyError", "data_kind", "families", "get_family",
]

ENTRY_POINT_GROUP = "obliviate.families"


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
    for spec in builtin.BUILTIN_FAMILIES:
        found.setdefault(spec.name, spec)
    return found


def get_family(name: str) -> FamilySpec:
    try:
        return families()[name]
    except KeyError:
        raise UnknownFamilyError(name) from None


def data_kind(name: str) -> str | None:
    """What the family trains on ("tabular", "text", "image"), or None for a family no longer
    registered (a stored version of a removed plugin)."""
    try:
        return get_family(name).data_kind
    except UnknownFamilyError:
        return None
