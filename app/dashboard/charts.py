"""Charts as plain data for the templates' inline SVG: drawn on the server, no script.

A verification block is flattened into one row per numeric figure it holds on both sides
(before/after), so the chart shows whatever the workers record today and grows with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.config import get_settings

WIDTH = 100.0  # bar lengths are percentages of the row's scale; the SVG scales to its box


@dataclass(frozen=True)
class Bar:
    label: str
    before: float | None
    after: float
    reference: float | None
    reference_label: str | None
    scale: float

    def length(self, value: float | None) -> float:
        return 0.0 if value is None or self.scale <= 0 else round(max(value, 0.0) / self.scale * WIDTH, 2)


def _numbers(block: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(block, bool) or block is None:
        return {}
    if isinstance(block, int | float):
        return {prefix: float(block)}
    if isinstance(block, dict):
        found: dict[str, float] = {}
        for key in sorted(block):
            if key == "n":  # sample sizes are not figures to compare
                continue
            found.update(_numbers(block[key], f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {}


def _reference(name: str, after: dict[str, float]) -> tuple[float | None, str | None]:
    """The line a figure is judged against: the policy threshold, or the unseen data's figure."""
    settings = get_settings()
    if name in ("mia_auc", "text.loss_auc", "text.min_k_plus_plus_auc"):  # the last two: language models
        return 0.5 + settings.verification_tolerances()["mia_auc"], "tolerance"
    if name == "text.extraction.forget.fraction" and "text.extraction.holdout.fraction" in after:
        return after["text.extraction.holdout.fraction"], "held-out records extracted"
    if name == "forget.accuracy" and "holdout.accuracy" in after:
        return after["holdout.accuracy"], "held-out accuracy"
    return None, None


def verification_bars(figures: dict[str, Any] | None) -> list[Bar]:
    if not figures or not isinstance(figures.get("after"), dict):
        return []
    before = _numbers(figures.get("before") or {})
    after = _numbers(figures["after"])
    bars = []
    for name, value in after.items():
        reference, label = _reference(name, after)
        previous = before.get(name)
        values = [v for v in (previous, value, reference) if v is not None]
        fraction = all(0.0 <= v <= 1.0 for v in values)
        bars.append(Bar(name.replace(".", " "), previous, value, reference, label, 1.0 if fraction else max(values)))
    return bars


@dataclass(frozen=True)
class Series:
    """One metric across model versions, as SVG polyline points in a 100 × 40 box."""

    name: str
    values: list[tuple[int, float]]
    coords: list[tuple[float, float]]
    low: float
    high: float

    @property
    def points(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.coords)


def metric_series(versions: list[tuple[int, dict[str, Any]]]) -> list[Series]:
    """Per metric name, its value at each version that has it (a version's metrics flattened,
    a verification block counting as its 'after' side)."""
    flat: dict[str, list[tuple[int, float]]] = {}
    for number, metrics in versions:
        figures = metrics.get("verification", {}).get("after") if isinstance(metrics.get("verification"), dict) else metrics
        for name, value in _numbers(figures or {}).items():
            flat.setdefault(name, []).append((number, value))
    series = []
    for name, values in sorted(flat.items()):
        low, high = min(v for _n, v in values), max(v for _n, v in values)
        span = (high - low) or 1.0
        step = 100.0 / max(len(values) - 1, 1)
        # One value is a dot in the middle; several spread from left to right, low at the bottom.
        coords = [(50.0 if len(values) == 1 else i * step, 38 - (v - low) / span * 36 if high > low else 20.0)
                  for i, (_n, v) in enumerate(values)]
        series.append(Series(name.replace(".", " "), values, coords, low, high))
    return series


def remediation_bars(checks: dict[str, Any] | None) -> list[Bar]:
    """A remediation's checks of one model (docs/remediation.md): before and after, with the
    retrain as the reference line, for every figure the checks hold on all three sides."""
    bars: list[Bar] = []
    for name, figures in _three_sided(checks or {}).items():
        values = [v for v in figures if v is not None]
        if figures[1] is None or not values:
            continue
        scale = 1.0 if all(0.0 <= v <= 1.0 for v in values) else max(values)
        bars.append(Bar(name, figures[0], figures[1], figures[2], "retrain", scale))
    return bars


def _three_sided(block: Any, prefix: str = "") -> dict[str, tuple[float | None, float | None, float | None]]:
    if not isinstance(block, dict):
        return {}
    if {"before", "after", "retrain"} <= set(block):
        return {prefix: (block["before"], block["after"], block["retrain"])}
    found: dict[str, tuple[float | None, float | None, float | None]] = {}
    for key in sorted(block):
        found.update(_three_sided(block[key], f"{prefix} {key}".strip().replace("_", " ")))
    return found
