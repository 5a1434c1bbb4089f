"""Charts drawn on the server as inline SVG, no script: the forest plot of a verification block's
checks (`forest_plot`), the table of its figures (`verification_figures`), the metrics across a
model's versions (`metric_series`), a remediation's before, after and retrain (`remediation_bars`).

A verification block's figures are flattened into one row per numeric figure it holds on both
sides (before/after), so the table shows whatever the workers record today and grows with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from app.config import get_settings

WIDTH = 100.0  # a remediation bar's length is a percentage of its row's scale; the SVG scales to its box


@dataclass(frozen=True)
class FigureRow:
    """One figure of a verification block: before and after unlearning, and the line it is read
    against (the policy's threshold, or the unseen data's figure)."""

    label: str
    before: float | None
    after: float
    reference: float | None
    reference_label: str | None


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


def verification_figures(figures: dict[str, Any] | None) -> list[FigureRow]:
    if not figures or not isinstance(figures.get("after"), dict):
        return []
    before = _numbers(figures.get("before") or {})
    after = _numbers(figures["after"])
    rows = []
    for name, value in after.items():
        reference, label = _reference(name, after)
        rows.append(FigureRow(name.replace(".", " "), before.get(name), value, reference, label))
    return rows


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


@dataclass(frozen=True)
class Bar:
    """One figure of a remediation's checks (templates/_remediation_bars.html): before, after
    and the retrain's, as lengths on the row's scale."""

    label: str
    before: float | None
    after: float
    reference: float | None
    reference_label: str | None
    scale: float

    def length(self, value: float | None) -> float:
        return 0.0 if value is None or self.scale <= 0 else round(max(value, 0.0) / self.scale * WIDTH, 2)


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
# The forest plot of a verification block: one row per check, its estimate and interval drawn
# against its tolerance band on one shared axis. Every check is a difference from what unseen
# data gives (0 = indistinguishable), on a fraction scale, so one axis serves them all; each row
# names its own unit. Built here as SVG markup (no script; attributes only, no inline style).
CHECK_LABELS: dict[str, tuple[str, str]] = {
    # name: (what the row shows, its unit)
    "forget_accuracy_gap": ("Forget − holdout accuracy", "accuracy (0–1)"),
    "mia_auc": ("Loss-attack AUC − 0.5", "AUC"),
    "loss_auc": ("Loss-attack AUC − 0.5", "AUC"),
    "min_k_plus_plus_auc": ("Min-K%++ AUC − 0.5", "AUC"),
    "per_record_audit": ("Per-record LiRA TPR − FPR", "rate (0–1)"),
    "holdout_drop": ("Holdout accuracy drop", "accuracy (0–1)"),
    "extraction": ("Forget − holdout extracted", "share of records"),
}
VERDICT_COLOURS = {"pass": "#166534", "fail": "#b91c1c", "inconclusive": "#854d0e"}
TICK_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
ROW, TOP, LEFT, PLOT, VALUES = 34, 26, 200, 260, 250  # pixels: row height, header, label column, axis, value column
# Below the rows: the tick labels, the axis caption, then the legend on a line of its own, so
# that no tick label (the right-most ends past the axis) can reach it whatever the scale.
TICK_BASELINE, CAPTION_BASELINE, LEGEND_TOP, FOOTER = 15, 30, 38, 52


@dataclass(frozen=True)
class ForestRow:
    name: str
    label: str
    unit: str
    estimate: float | None
    low: float | None
    high: float | None
    tolerance: float
    two_sided: bool
    verdict: str
    utility: bool

    @property
    def band(self) -> str:
        return f"±{self.tolerance:.3f}" if self.two_sided else f"≤ {self.tolerance:.3f}"

    @property
    def values(self) -> str:
        if self.estimate is None or self.low is None or self.high is None:
            return f"not measurable · tolerance {self.band}"
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}] · tolerance {self.band}"


@dataclass(frozen=True)
class ForestPlot:
    rows: list[ForestRow]
    confidence: float
    limit: float
    step: float
    svg: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def forest_rows(verdicts: dict[str, Any] | None) -> list[ForestRow]:
    """One row per stored check of a verification block (its `checks`)."""
    rows = []
    for found in (verdicts or {}).get("checks") or []:
        if not isinstance(found, dict) or _number(found.get("tolerance")) is None:
            continue
        interval = found.get("interval")
        low, high = (_number(interval[0]), _number(interval[1])) if isinstance(interval, list) and len(interval) == 2 else (None, None)
        name = str(found.get("name"))
        label, unit = CHECK_LABELS.get(name, (name.replace("_", " "), "fraction"))
        rows.append(ForestRow(name=name, label=label, unit=unit, estimate=_number(found.get("estimate")), low=low,
                              high=high, tolerance=float(found["tolerance"]), two_sided=bool(found.get("two_sided")),
                              verdict=str(found.get("verdict")), utility=bool(found.get("utility"))))
    return rows


def _scale(rows: list[ForestRow]) -> tuple[float, float]:
    """The axis' half-width (symmetric about 0) and its tick step: every interval and band fits."""
    extent = max([abs(v) for r in rows for v in (r.low, r.high, r.estimate, r.tolerance) if v is not None] + [0.05])
    extent *= 1.15
    step = next((s for s in TICK_STEPS if extent / s <= 4), TICK_STEPS[-1])
    return math.ceil(extent / step - 1e-9) * step, step


def forest_plot(verdicts: dict[str, Any] | None, title: str) -> ForestPlot | None:
    """The block's checks as a forest plot (None without checks): axes, tick values, each row's
    label and unit, its tolerance band shaded, its interval and estimate, its figures in words."""
    rows = forest_rows(verdicts)
    if not rows:
        return None
    confidence = next((float(c["confidence"]) for c in (verdicts or {}).get("checks") or []
                       if isinstance(c, dict) and _number(c.get("confidence")) is not None), 0.9)
    limit, step = _scale(rows)

    def x(value: float) -> float:
        return round(LEFT + (max(-limit, min(limit, value)) + limit) / (2 * limit) * PLOT, 2)

    height = TOP + len(rows) * ROW + FOOTER
    width = LEFT + PLOT + VALUES
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(title)}" class="forest" font-family="sans-serif">',
             f"<title>{escape(title)}</title>",
             f'<text x="0" y="14" font-size="11" font-weight="bold" fill="#1f2937">Check (unit)</text>',
             f'<text x="{LEFT + PLOT / 2}" y="14" font-size="11" font-weight="bold" fill="#1f2937" text-anchor="middle">'
             f'Estimate and {100 * confidence:.0f}% interval</text>',
             f'<text x="{LEFT + PLOT + 10}" y="14" font-size="11" font-weight="bold" fill="#1f2937">Value [interval] · tolerance</text>']
    bottom = TOP + len(rows) * ROW
    for index, row in enumerate(rows):
        y = TOP + index * ROW
        middle = y + ROW / 2
        colour = VERDICT_COLOURS.get(row.verdict, "#1f2937")
        band_low = x(-row.tolerance) if row.two_sided else x(-limit)
        parts.append(f'<g class="check" data-check="{escape(row.name)}" data-verdict="{escape(row.verdict)}">')
        parts.append(f'<rect class="band" x="{band_low}" y="{y + 4}" width="{round(x(row.tolerance) - band_low, 2)}" '
                     f'height="{ROW - 8}" fill="#dcfce7" stroke="#86efac"><title>tolerance {escape(row.band)}</title></rect>')
        parts.append(f'<text x="0" y="{middle - 2}" font-size="11" fill="#1f2937">{escape(row.label)}'
                     f'{" (utility)" if row.utility else ""}</text>')
        parts.append(f'<text x="0" y="{middle + 11}" font-size="9" fill="#4b5563">{escape(row.unit)} · {escape(row.verdict)}</text>')
        if row.low is not None and row.high is not None and row.estimate is not None:
            parts.append(f'<line class="interval" x1="{x(row.low)}" x2="{x(row.high)}" y1="{middle}" y2="{middle}" '
                         f'stroke="{colour}" stroke-width="2"></line>')
            for end in (row.low, row.high):
                parts.append(f'<line x1="{x(end)}" x2="{x(end)}" y1="{middle - 5}" y2="{middle + 5}" stroke="{colour}" '
                             f'stroke-width="2"></line>')
            parts.append(f'<rect class="estimate" x="{x(row.estimate) - 4}" y="{middle - 4}" width="8" height="8" '
                         f'fill="{colour}"></rect>')
        else:
            parts.append(f'<text x="{LEFT + PLOT / 2}" y="{middle + 4}" font-size="10" fill="#4b5563" '
                         f'text-anchor="middle">not measurable</text>')
        parts.append(f'<text x="{LEFT + PLOT + 10}" y="{middle + 4}" font-size="10" fill="#1f2937">'
                     f'{escape(row.values)}</text></g>')
    # The axes: 0 (what unseen data gives) dashed across the rows, then the value axis with ticks.
    parts.append(f'<line x1="{x(0)}" x2="{x(0)}" y1="{TOP}" y2="{bottom}" stroke="#4b5563" stroke-dasharray="3 3"></line>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{bottom}" y2="{bottom}" stroke="#1f2937"></line>')
    ticks = int(round(limit / step))
    for k in range(-ticks, ticks + 1):
        value = k * step
        parts.append(f'<line x1="{x(value)}" x2="{x(value)}" y1="{bottom}" y2="{bottom + 4}" stroke="#1f2937"></line>')
        parts.append(f'<text class="tick" x="{x(value)}" y="{bottom + TICK_BASELINE}" font-size="9" fill="#1f2937" '
                     f'text-anchor="middle">{value:+.2f}</text>')
    parts.append(f'<text class="caption" x="{LEFT + PLOT / 2}" y="{bottom + CAPTION_BASELINE}" font-size="10" '
                 f'fill="#1f2937" text-anchor="middle">'
                 f'difference from unseen data (0 = indistinguishable; 0.10 = 10 points)</text>')
    parts.append(f'<g class="legend"><rect x="{LEFT}" y="{bottom + LEGEND_TOP}" width="12" height="9" fill="#dcfce7" '
                 f'stroke="#86efac"></rect><text x="{LEFT + 16}" y="{bottom + LEGEND_TOP + 8}" font-size="9" '
                 f'fill="#1f2937">tolerance band</text></g>')
    parts.append("</svg>")
    return ForestPlot(rows=rows, confidence=confidence, limit=limit, step=step, svg="".join(parts))
