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
the interval functions below are called with, and every Check states its `confidence`.

The interval functions here take the two-sided level 1 − a they are asked for:
- difference of two independent proportions: Newcombe's hybrid Wilson score interval
  (Newcombe 1998, method 10), which stays honest for one or two records where a bootstrap
  collapses to a point;
- difference of paired proportions (the same records before and after): a percentile bootstrap
  over records;
- AUC: DeLong et al. 1988, from the structural components of the Mann-Whitney statistic,
  made conservative for small forget sets (see `delong_auc`);
- a rate: Clopper-Pearson.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
from scipy import stats

from app.unlearning.types import JsonValue

Verdict = Literal["pass", "fail", "inconclusive"]
Interval = tuple[float, float]
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Check:
    """One check's evidence and verdict, as it goes into the job, the certificate and the API."""

    name: str
    # The membership attack behind the figure ("loss_threshold", "offline_lira"), None for
    # accuracy checks.
    attack: str | None
    # How the interval was computed ("newcombe_wilson", "delong", "clopper_pearson", "bootstrap").
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
    # A utility check (the price in accuracy) rather than a forgetting one: only its `fail`
    # blocks a result. A forgetting claim needs proof, so an inconclusive forgetting check
    # blocks; a utility check that cannot show the price is small records that and blocks
    # only on evidence that it is too high (a retrain pays a price in accuracy too).
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


def overall(checks: Iterable[Check]) -> Verdict:
    """fail if any check fails; pass if every forgetting check passes and no utility check
    fails; otherwise inconclusive (also without any forgetting check)."""
    checks = list(checks)
    if any(c.verdict == "fail" for c in checks):
        return "fail"
    forgetting = [c.verdict for c in checks if not c.utility]
    if not forgetting:
        return "inconclusive"
    return "pass" if all(v == "pass" for v in forgetting) else "inconclusive"


def _blocks(found: Check) -> bool:
    return found.verdict == "fail" or (found.verdict == "inconclusive" and not found.utility)


def reasons(checks: Iterable[Check]) -> list[str]:
    """Why a result is not verified: the reason of every check that blocks it (a forgetting
    check that did not pass, a utility check that failed)."""
    return [f"{c.verdict}: {c.reason}" for c in checks if _blocks(c)]


def notes(checks: Iterable[Check]) -> list[str]:
    """What was recorded without blocking: utility checks that were inconclusive."""
    return [f"{c.verdict}: {c.reason}" for c in checks if c.verdict == "inconclusive" and c.utility]


# Intervals.


def clopper_pearson(successes: int, trials: int, alpha: float) -> Interval:
    """Exact two-sided interval of a binomial rate; (0, 1) without trials."""
    if trials <= 0:
        return (0.0, 1.0)
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return (low, high)


def wilson(successes: int, trials: int, alpha: float) -> Interval:
    if trials <= 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion_difference(a: npt.ArrayLike, b: npt.ArrayLike, alpha: float) -> tuple[float, Interval] | None:
    """mean(a) − mean(b) of two independent 0/1 samples with Newcombe's hybrid score interval;
    None when either sample is empty."""
    a, b = _floats(a), _floats(b)
    if a.size == 0 or b.size == 0:
        return None
    ka, kb = int(np.rint(a.sum())), int(np.rint(b.sum()))
    pa, pb = ka / a.size, kb / b.size
    la, ua = wilson(ka, a.size, alpha)
    lb, ub = wilson(kb, b.size, alpha)
    difference = pa - pb
    low = difference - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = difference + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return difference, (max(-1.0, low), min(1.0, high))


def paired_difference(a: npt.ArrayLike, b: npt.ArrayLike, alpha: float, *, seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, Interval] | None:
    """mean(a − b) over the same records, with a percentile bootstrap over records; None when
    empty. With one record the interval is the whole range: nothing is learnt from one pair."""
    a, b = _floats(a), _floats(b)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    if a.size == 0:
        return None
    differences = a - b
    estimate = float(differences.mean())
    if a.size < 2:
        return estimate, (-1.0, 1.0)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(differences, return_counts=True)
    if values.size <= 16:
        # Resampling records with replacement draws multinomial counts of the distinct values:
        # the same bootstrap distribution, in O(resamples) instead of O(resamples × records).
        drawn = rng.multinomial(a.size, counts / a.size, size=resamples)
        means = drawn @ values / a.size
    else:
        means = differences[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    return estimate, (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def _floats(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _midranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(stats.rankdata(values, method="average"), dtype=np.float64)


def delong_auc(member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike, alpha: float) -> tuple[float, Interval] | None:
    """AUC = P(member score > non-member score), ties half, with DeLong's interval (clipped to
    [0, 1]). None when a side is empty; with one record on a side the variance is unknown and
    the interval is [0, 1]."""
    x = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    y = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    m, n = x.size, y.size
    if m == 0 or n == 0:
        return None
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("membership scores contain NaN")
    combined = _midranks(np.concatenate([x, y]))
    rank_x, rank_y = _midranks(x), _midranks(y)
    auc = float((combined[:m].sum() - m * (m + 1) / 2) / (m * n))
    if m < 2 or n < 2:
        return auc, (0.0, 1.0)
    v10 = (combined[:m] - rank_x) / n          # per member: share of non-members below it
    v01 = 1.0 - (combined[m:] - rank_y) / m    # per non-member: share of members above it
    # DeLong's variance from a handful of members is itself a guess. Two corrections keep small
    # forget sets honest: the members' component is at least what it is when they look exactly
    # unseen (each member's share of non-members below it is then uniform, variance 1/12), and
    # the quantile is Student's with the members' degrees of freedom.
    variance = max(v10.var(ddof=1), 1.0 / 12) / m + v01.var(ddof=1) / n
    se = math.sqrt(variance)
    quantile = float(stats.t.ppf(1 - alpha / 2, df=m - 1))
    return auc, (max(0.0, auc - quantile * se), min(1.0, auc + quantile * se))


def calibrated_difference(forget: npt.ArrayLike, null: npt.ArrayLike, alpha: float) -> tuple[float, Interval] | None:
    """mean(forget) − mean(null) of two independent samples of per-record differences (a target's
    correctness less its references', say), with a Welch interval at level 1 − alpha. As in
    `delong_auc`, the forget side's variance is at least the null side's (what it is when the
    forget records look exactly unseen) and the quantile is Student's with the forget side's
    degrees of freedom, so a handful of records that happen to agree cannot make the interval
    narrow. None when a side is empty; one forget record or one null record gives [−1, 1]."""
    a, b = np.asarray(forget, dtype=np.float64), np.asarray(null, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return None
    estimate = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return estimate, (-1.0, 1.0)
    null_variance = float(b.var(ddof=1))
    se = math.sqrt(max(float(a.var(ddof=1)), null_variance) / a.size + null_variance / b.size)
    quantile = float(stats.t.ppf(1 - alpha / 2, df=a.size - 1))
    return estimate, (max(-2.0, estimate - quantile * se), min(2.0, estimate + quantile * se))
