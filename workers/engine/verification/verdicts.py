"""Statistical verdicts: an estimate, its confidence interval at level 1 − α, a tolerance, and
`pass | fail | inconclusive`.

Every forgetting check measures an *advantage* of the forget records over records the model
never saw (accuracy gap, attack AUC − 0.5, per-record audit rate). Zero means "looks unseen".
With a tolerance t the verdict reads the interval [low, high]:

    pass          the whole interval lies within the tolerance (high ≤ t; for a two-sided
                  check also low ≥ −t)
    fail          the whole interval lies beyond it (low > t; two-sided also high < −t)
    inconclusive  anything else: the data cannot tell, usually because the forget set is small

Inconclusive is not a pass. The decision rule knows nothing of models or attacks, so any
check that produces (estimate, interval, tolerance) reuses it, text checks included.

Each verdict is a test at level α. A one-sided check passes when the upper end of the interval,
a one-sided 1 − α bound, is within the tolerance; a two-sided check is an equivalence test, two
one-sided tests at α each (TOST, Schuirmann 1987). Either way the interval whose ends decide is
the two-sided one at level 1 − 2α (90 % for α = 0.05): `interval_alpha` turns α into the level
the interval functions are called with, and every Check states its `confidence`.

The interval functions are in intervals.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, cast

import numpy as np

from app.unlearning.types import JsonValue
from workers.engine.verification.intervals import Interval

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Check:
    """One check's evidence and verdict, as it goes into the job, the certificate and the API."""

    name: str
    # The membership attack behind the figure ("loss_threshold", "offline_lira"), None for
    # accuracy checks.
    attack: str | None
    # How the interval was computed ("newcombe_wilson", "delong", "mover_clopper_pearson", "welch", "bootstrap").
    test: str
    estimate: float | None
    interval: Interval | None
    alpha: float
    tolerance: float
    two_sided: bool
    # Records the estimate rests on (the forget records, for forgetting checks).
    n: int
    # What "unseen" is measured against: "holdout", "references", "shards", "retrain".
    reference: str
    verdict: Verdict
    reason: str
    extra: dict[str, JsonValue] = field(default_factory=dict)
    # Two-sided level of `interval` (1 − 2α): each of its ends is a one-sided 1 − α bound.
    confidence: float = 0.9
    # A utility check (the price in accuracy) rather than a forgetting one. A forgetting claim
    # needs proof, so an inconclusive forgetting check blocks. An approximate result must prove
    # its price too (`overall(..., utility="required")`): a large drop the data cannot pin down
    # is what a result that damaged the model looks like. An exact method's utility check is
    # only noted (`utility="noted"`): a retrain pays a price in accuracy too (fewer rows), and its
    # verdicts are a sanity check of lineage and calibration, which a drop says nothing about.
    utility: bool = False

    def as_dict(self) -> dict[str, JsonValue]:
        """The stored shape: every field in declaration order, the interval as a list."""
        found: dict[str, JsonValue] = {name: rounded(getattr(self, name)) for name in CHECK_FIELDS}
        found["interval"] = rounded(list(self.interval)) if self.interval is not None else None
        return found

    @classmethod
    def from_json(cls, body: Mapping[str, JsonValue]) -> Check:
        """A stored check read back (job results and certificates carry `as_dict`)."""
        interval = body.get("interval")
        extra = body.get("extra")
        return cls(name=_text(body["name"]), attack=None if body.get("attack") is None else _text(body["attack"]),
                   test=_text(body["test"]), estimate=_optional_float(body.get("estimate")),
                   interval=None if not isinstance(interval, Sequence) or isinstance(interval, str)
                   else (_float(interval[0]), _float(interval[1])),
                   alpha=_float(body["alpha"]), tolerance=_float(body["tolerance"]),
                   two_sided=bool(body["two_sided"]), n=int(_float(body["n"])), reference=_text(body["reference"]),
                   verdict=_verdict(body["verdict"]), reason=_text(body["reason"]),
                   extra=dict(extra) if isinstance(extra, Mapping) else {},
                   confidence=_float(body.get("confidence", 0.9)), utility=bool(body.get("utility", False)))


CHECK_FIELDS = tuple(f.name for f in fields(Check))


def _text(value: JsonValue) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string in a stored check, got {value!r}")
    return value


def _float(value: JsonValue) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number in a stored check, got {value!r}")
    return float(value)


def _optional_float(value: JsonValue) -> float | None:
    return None if value is None else _float(value)


def _verdict(value: JsonValue) -> Verdict:
    if value in ("pass", "fail", "inconclusive"):
        return cast(Verdict, value)
    raise TypeError(f"unknown verdict in a stored check: {value!r}")


# Figures are stored to six decimals: more is noise at any forget-set size, and a float's full
# 17-digit form has neighbours that parse to the same number, which a signed document must not.
DECIMALS = 6


def rounded(value: object) -> JsonValue:
    """`value` as stored: floats to DECIMALS places, numpy scalars as Python ones, tuples as lists."""
    if isinstance(value, bool | np.bool_) or value is None:
        return None if value is None else bool(value)
    if isinstance(value, float | np.floating):
        return round(float(value), DECIMALS)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    raise TypeError(f"not a stored figure: {value!r}")


def interval_alpha(alpha: float) -> float:
    """The two-sided level 1 − a at which to compute an interval whose ends are one-sided 1 − α
    bounds: a = 2α."""
    return 2 * alpha


def decide(low: float, high: float, tolerance: float, *, two_sided: bool) -> Verdict:
    if two_sided:
        if low >= -tolerance and high <= tolerance:
            return "pass"
        if low > tolerance or high < -tolerance:
            return "fail"
        return "inconclusive"
    if high <= tolerance:
        return "pass"
    if low > tolerance:
        return "fail"
    return "inconclusive"


def _explain(label: str, estimate: float, interval: Interval, tolerance: float, verdict: Verdict,
             alpha: float, two_sided: bool, n: int) -> str:
    bound = f"±{tolerance:.3f}" if two_sided else f"≤ {tolerance:.3f}"
    figures = (f"{label} {estimate:+.3f}, {100 * (1 - interval_alpha(alpha)):.0f}% interval "
               f"[{interval[0]:+.3f}, {interval[1]:+.3f}] on {n} records, tolerance {bound}")
    if verdict == "pass":
        return f"{figures}: within tolerance"
    if verdict == "fail":
        return f"{figures}: beyond tolerance"
    return f"{figures}: the interval straddles the tolerance, too little evidence to pass"


def check(name: str, *, label: str, attack: str | None, test: str, estimate: float | None,
          interval: Interval | None, alpha: float, tolerance: float, two_sided: bool, n: int,
          reference: str, unavailable: str | None = None, figures: Mapping[str, JsonValue] | None = None,
          **extra: JsonValue) -> Check:
    """A Check from an estimate and its interval; without them (`unavailable` says why) the
    verdict is inconclusive. Its `extra` holds the keyword figures, then `figures`."""
    extra = {**extra, **(figures or {})}
    confidence = 1 - interval_alpha(alpha)
    if estimate is None or interval is None:
        return Check(name, attack, test, None, None, alpha, tolerance, two_sided, n, reference,
                     "inconclusive", f"{label}: {unavailable or 'not measurable'}", dict(extra), confidence)
    interval = (float(interval[0]), float(interval[1]))
    verdict = decide(*interval, tolerance, two_sided=two_sided)
    return Check(name, attack, test, float(estimate), interval, alpha, tolerance, two_sided, n, reference,
                 verdict, _explain(label, estimate, interval, tolerance, verdict, alpha, two_sided, n), dict(extra),
                 confidence)


# How utility checks weigh in a verdict: "fail" (the default) blocks on a failed one only;
# "required" (an approximate result) blocks on any that did not pass; "noted" (an exact result's
# sanity check) never blocks, as removing rows costs accuracy and says nothing of the lineage or
# the checks' calibration that the sanity check is there to catch.
UtilityRule = Literal["fail", "required", "noted"]


def overall(checks: Iterable[Check], *, utility: UtilityRule = "fail") -> Verdict:
    """fail if any check fails; pass if every forgetting check passes and no utility check
    fails; otherwise inconclusive (also without any forgetting check). With `utility`
    "required" (an approximate result) every utility check must pass as well: a price the data
    cannot show to be within its tolerance blocks the certificate, as an unproven forgetting
    claim does; with "noted" (an exact result) utility checks do not count."""
    checks = [c for c in checks if not _ignored(c, utility)]
    if any(c.verdict == "fail" for c in checks):
        return "fail"
    forgetting = [c.verdict for c in checks if not c.utility]
    if not forgetting:
        return "inconclusive"
    required = forgetting + ([c.verdict for c in checks if c.utility] if utility == "required" else [])
    return "pass" if all(v == "pass" for v in required) else "inconclusive"


def _ignored(found: Check, utility: UtilityRule) -> bool:
    return found.utility and utility == "noted"


def _blocks(found: Check, utility: UtilityRule = "fail") -> bool:
    if _ignored(found, utility):
        return False
    return found.verdict == "fail" or (found.verdict == "inconclusive" and (utility == "required" or not found.utility))


def reasons(checks: Iterable[Check], *, utility: UtilityRule = "fail") -> list[str]:
    """Why a result is not verified: the reason of every check that blocks it (a forgetting
    check that did not pass; a utility check as `utility` says)."""
    return [f"{c.verdict}: {c.reason}" for c in checks if _blocks(c, utility)]


def notes(checks: Iterable[Check], *, utility: UtilityRule = "fail") -> list[str]:
    """What was recorded without blocking: utility checks that did not pass and do not block."""
    return [f"{c.verdict}: {c.reason}" for c in checks
            if c.utility and c.verdict != "pass" and not _blocks(c, utility)]
