"""Per-record membership test against reference models (offline LiRA, Carlini et al. 2022), judged
per subject, and an ε lower bound from the same test. No shadow unlearning runs: the references
never saw the forget records, so this is offline LiRA; it does not unlearn on shadow models
(Hayes et al. 2025) and reports no ε of the method itself.

"Audit" elsewhere means the hash-chained event log; the stored check keeps its name
`per_record_audit`, which certificates already carry.

The score of a record under a network is its logit-scaled confidence in the record's label,
φ = log p_y − log(1 − p_y), which is close to Gaussian across networks for one record. The
references are networks trained on parts of the model's data; for each tested record the ones
that never saw it ("OUT") give the score that record has when unseen. Its residual is the
target's score minus the OUT mean, in units of the record's OUT spread (shrunk towards the
median spread, since a few references estimate it poorly).

The target is usually trained on more data than a reference (all of it against a half), so it
is a little more confident everywhere. The residuals of the null records (the holdout: unseen by
the target and by every reference) measure that shift and the spread of residuals of unseen
records; each tested residual is standardised against them, z = (r − mean) / sd, and its
one-sided p-value 1 − Φ(z) tests "this record looks unseen".

A null record no reference saw is scored against the OUT references of a forget record drawn at
random (`matched_null_out`): one of each complementary pair, as every forget record is. Averaging
both members of a pair instead cancels what the pair's halves disagree on, so the null residuals
were narrower than the tested ones and an exact retrain showed a false leak.

The subject is the unit a certificate speaks of, so records are judged per subject: each
record's p-value becomes a normal score, and a subject's scores are joined by Stouffer's z,
Z = Σ zᵢ / √(m + m(m − 1)ρ), where ρ is the correlation of scores within one subject measured on
the null records (a subject's records are often near-duplicates; ρ = 0 would make them count
as independent evidence). A subject whose p-value 1 − Φ(Z) survives Holm's correction at α over
all tested subjects is flagged: it is still memorised, with a family-wise error of at most α,
whatever the aggregate says. Without subject labels each record is its own subject.

The test is two-sided: a subject far *below* what unseen records score is as recognisable as
one far above it (an over-forgotten subject stands out by being unfamiliar: the Streisand
effect). The two tails split α: `UNFAMILIAR_SHARE` of it for the lower one, the rest for the
upper (still memorised, what a certificate must above all rule out), so each subject's p-value
is min(p_upper / (1 − w), p_lower / w), and Holm over them keeps the family-wise error of both
kinds together at α. An over-forgetting seldom hides in one record, so the smaller share
suffices there. The too familiar are `flagged` (a repair may treat them), the too unfamiliar
`unfamiliar`, and either fails the check. So does a collapse of the spread: when the forget
subjects' scores vary less than half as much as unseen subjects' (the upper 1 − α bound of the
variance ratio, an F test, below `MIN_SPREAD_RATIO`), a method has pressed every record onto the
same value, which no model that never saw them would do.

The aggregate is the attack's advantage at a fixed per-record level q (`record_level`), counted
over subjects: TPR is the share of forget subjects whose joined z is above Φ⁻¹(1 − q), FPR the
same share among the null subjects (the holdout's). The advantage TPR − FPR is 0 for a model
that never saw the forget set. Its interval is at 1 − 2α, as every verdict's, so each end is a
one-sided 1 − α bound: Newcombe's square-and-add (MOVER) of the two rates' exact Clopper-Pearson
limits at that level (intervals.py `rate_difference`). Subtracting one rate's 1 − α/2 limit from
the other's, as this check once did, holds too, but it spends α on both rates missing at once
and is about half as wide again: at 100 subjects and a 0.15 tolerance its size at the boundary
was 0.002–0.01 against α = 0.05, and it left results that a retrain matches inconclusive.

ε lower bound. For any (ε, δ)-differentially private training, every membership test obeys
TPR ≤ e^ε·FPR + δ and 1 − FPR ≤ e^ε·(1 − TPR) + δ (Kairouz et al. 2015). With the
one-sided Clopper-Pearson bounds TPR_low and FPR_high at 1 − α/2 each:

    ε ≥ max(0, ln((TPR_low − δ) / FPR_high), ln((1 − FPR_high − δ) / (1 − TPR_low)))

holds with confidence 1 − α. It uses only this model, its references and its holdout, and the
threshold is fixed in advance (q), so no selection bias enters. It is a lower bound: a weak
bound on a few records says little, but any bound above 0 is evidence of leakage at 1 − α, and
the check then fails whatever its interval's upper end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import stats

from app.unlearning.types import JsonValue
from workers.engine.verification.intervals import Interval, clopper_pearson, rate_difference
from workers.engine.verification.verdicts import Check, check, interval_alpha

# Fewest OUT references a record needs to be tested, and fewest null records for the shift.
MIN_OUT_REFERENCES = 2
MIN_NULL_RECORDS = 20
# Weight, in degrees of freedom, of the median spread against a record's own OUT spread.
PRIOR_DF = 10
# Smallest ratio of the forget subjects' score variance to unseen subjects' that is not a
# collapse, and fewest forget subjects the spread is judged on.
MIN_SPREAD_RATIO = 0.5
MIN_SPREAD_SUBJECTS = 10
# Share w of α the lower tail (too unfamiliar) is tested at; the upper tail gets 1 − w.
UNFAMILIAR_SHARE = 0.25


def logit_confidence(proba: npt.ArrayLike, labels: np.ndarray) -> npt.NDArray[np.float64]:
    """φ = log p_y − log(1 − p_y) per record, from class probabilities [n, C] (float64); from
    [K, n, C] (K networks' probabilities of the same records) it is [K, n], row k the same as
    from [n, C] alone."""
    proba = np.asarray(proba, dtype=np.float64)
    rows, chosen = np.arange(len(labels)), np.asarray(labels)
    picked = proba[..., rows, chosen]
    # 1 − p_y as the other classes' sum keeps precision when p_y rounds to 1.
    others = proba.copy()
    others[..., rows, chosen] = 0.0
    rest = others.sum(axis=-1)
    return np.asarray(np.log(np.clip(picked, 1e-300, None)) - np.log(np.clip(rest, 1e-300, None)), dtype=np.float64)


def epsilon_lower_bound(tpr_low: float, fpr_high: float, delta: float = 0.0) -> float:
    """The largest ε the DP inequalities force, from a TPR lower and an FPR upper bound."""
    bounds = [0.0]
    if tpr_low - delta > 0 and fpr_high > 0:
        bounds.append(math.log((tpr_low - delta) / fpr_high))
    if 1 - fpr_high - delta > 0 and tpr_low < 1:
        bounds.append(math.log((1 - fpr_high - delta) / (1 - tpr_low)))
    return max(bounds)


@dataclass(frozen=True)
class Residuals:
    values: np.ndarray      # (target score − OUT mean) / the record's OUT spread, NaN where not testable
    out_counts: np.ndarray  # OUT references per record


def residuals(target: np.ndarray, references: np.ndarray, out_mask: np.ndarray) -> Residuals:
    """Target score minus the mean OUT reference score, per record. `references` is [n, K],
    `out_mask` [n, K] true where reference k's scores count as unseen for record i."""
    target = np.asarray(target, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    mask = np.asarray(out_mask, dtype=bool)
    counts = mask.sum(axis=1)
    totals = np.where(mask, references, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    # Records differ in how much their score varies between networks (an ambiguous record swings,
    # an easy one does not). Each residual is scaled by its record's OUT spread, shrunk towards
    # the median spread of all records since two to four references estimate it poorly.
    with np.errstate(invalid="ignore", divide="ignore"):
        squares = np.where(mask, (references - means[:, None]) ** 2, 0.0).sum(axis=1)
        own = np.where(counts > 1, squares / np.maximum(counts - 1, 1), np.nan)
    pooled = float(np.nanmedian(own)) if np.isfinite(own).any() else 1.0
    pooled = max(pooled, 1e-6)
    df = np.maximum(counts - 1, 0)
    variance = (df * np.nan_to_num(own) + PRIOR_DF * pooled) / (df + PRIOR_DF)
    scale = np.sqrt(variance * (1 + 1 / np.maximum(counts, 1)))
    values = np.where(counts >= MIN_OUT_REFERENCES, (target - means) / scale, np.nan)
    return Residuals(values, counts)


def matched_null_out(forget_out: np.ndarray, null_out: np.ndarray, seed: int = 0) -> np.ndarray:
    """`null_out` with each null record that every reference left out given the OUT references of
    a forget record drawn at random: one of each complementary pair, as the tested records have.
    Null records some reference saw (a SISA shard drawn for each) keep their own mask."""
    forget_out, matched = np.asarray(forget_out, dtype=bool), np.asarray(null_out, dtype=bool).copy()
    if forget_out.shape[0] == 0 or matched.shape[0] == 0:
        return matched
    unseen = matched.all(axis=1)
    drawn = np.asarray(np.random.default_rng(seed).integers(0, forget_out.shape[0], size=matched.shape[0]))
    matched[unseen] = forget_out[drawn[unseen]]
    return matched


def within_subject_correlation(scores: np.ndarray, subjects: np.ndarray | None) -> float | None:
    """The correlation of two records' scores within one subject (pairwise, around the overall
    mean), clipped to [0, 1]; None when no subject has two records."""
    if subjects is None or scores.size == 0:
        return None
    centred = scores - scores.mean()
    variance = float(np.mean(centred ** 2))
    _, codes = np.unique(np.asarray(subjects), return_inverse=True)
    sums = np.bincount(codes, weights=centred)
    squares = np.bincount(codes, weights=centred ** 2)
    sizes = np.bincount(codes)
    pairs = float((sizes * (sizes - 1)).sum())
    if pairs == 0 or variance <= 0:
        return None
    return float(np.clip((sums ** 2 - squares).sum() / pairs / variance, 0.0, 1.0))


@dataclass(frozen=True)
class SubjectTest:
    codes: np.ndarray     # each record's subject, as an index into p_values
    p_values: np.ndarray  # one per subject: Stouffer's z over its records, corrected for ρ (upper tail)
    correlation: float
    z: np.ndarray         # one per subject: the joined z itself
    null_z: np.ndarray    # one per null subject, joined the same way


def _join(scores: np.ndarray, subjects: np.ndarray | None, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """(each record's subject code, each subject's Stouffer z with within-subject correlation ρ)."""
    if subjects is None:
        return np.arange(scores.size), scores
    _, codes = np.unique(np.asarray(subjects), return_inverse=True)
    codes = np.asarray(codes).reshape(-1)
    sizes = np.bincount(codes).astype(np.float64)
    return codes, np.bincount(codes, weights=scores) / np.sqrt(sizes + sizes * (sizes - 1) * correlation)


def subject_test(p_records: np.ndarray, subjects: np.ndarray | None, null_p: np.ndarray,
                 null_subjects: np.ndarray | None) -> SubjectTest:
    """Joins each subject's record p-values into one (Stouffer's z with the within-subject
    correlation ρ of the null records, else of the tested ones), and the null subjects' alike.
    Without labels each record is its own subject."""
    scores = stats.norm.isf(np.clip(p_records, 1e-300, 1 - 1e-16))
    null_scores = stats.norm.isf(np.clip(null_p, 1e-300, 1 - 1e-16))
    if subjects is None:
        return SubjectTest(np.arange(scores.size), np.asarray(p_records, dtype=np.float64), 0.0, scores, null_scores)
    rho = within_subject_correlation(null_scores, null_subjects)
    if rho is None:
        rho = within_subject_correlation(scores, subjects)
    # None: every subject has one record, where ρ does not enter.
    correlation = 0.0 if rho is None else rho
    codes, joined = _join(scores, subjects, correlation)
    _, null_joined = _join(null_scores, null_subjects, correlation)
    return SubjectTest(codes, stats.norm.sf(joined), correlation, joined, null_joined)


@dataclass(frozen=True)
class Spread:
    ratio: float        # variance of the forget subjects' z over the null subjects'
    upper: float        # its one-sided upper 1 − α bound (F distribution)
    collapsed: bool


def spread_test(z: np.ndarray, null_z: np.ndarray, alpha: float) -> Spread | None:
    """Whether the forget subjects' joined scores vary less than `MIN_SPREAD_RATIO` times as much
    as the null subjects', at 1 − α (F test on the variance ratio); None with too few subjects."""
    if z.size < MIN_SPREAD_SUBJECTS or null_z.size < MIN_SPREAD_SUBJECTS:
        return None
    null_variance = float(np.var(null_z, ddof=1))
    if null_variance <= 0:
        return None
    ratio = float(np.var(z, ddof=1)) / null_variance
    # Var ratio / true ratio ~ F(n − 1, m − 1): the upper bound divides by the lower α quantile.
    upper = ratio / float(stats.f.ppf(alpha, z.size - 1, null_z.size - 1))
    return Spread(ratio, upper, upper < MIN_SPREAD_RATIO)


def lira_check(forget: Residuals, null: Residuals, *, alpha: float, tolerance: float,
               record_level: float = 0.05, delta: float = 0.0, reference: str = "references",
               record_ids: np.ndarray | None = None, forget_subjects: np.ndarray | None = None,
               null_subjects: np.ndarray | None = None) -> Check:
    """The per-record LiRA test's Check: estimate TPR − FPR, its MOVER interval on Clopper-Pearson limits, verdict, the
    flagged subjects (Holm at α over subjects; `flagged` lists their records) and the ε lower
    bound. A flagged subject, or an ε bound above 0, fails the check even if the aggregate is
    within tolerance. `forget_subjects` and `null_subjects` label each record's subject."""
    label = "per-record audit advantage (TPR − FPR)"
    n_forget = int(forget.values.size)
    tested = ~np.isnan(forget.values)
    null_kept = ~np.isnan(null.values)
    null_values = null.values[null_kept]
    coverage: dict[str, JsonValue] = {
        "records_audited": int(tested.sum()), "records": n_forget,
        "median_out_references": float(np.median(forget.out_counts)) if n_forget else 0.0,
        "null_records": int(null_values.size),
        "subjects": int(np.unique(np.asarray(forget_subjects)).size) if forget_subjects is not None else n_forget}

    def lira(estimate: float | None, interval: Interval | None, unavailable: str | None = None,
             **figures: JsonValue) -> Check:
        return check("per_record_audit", label=label, attack="offline_lira", test="mover_clopper_pearson",
                     estimate=estimate, interval=interval, alpha=alpha, tolerance=tolerance, two_sided=False,
                     n=n_forget, reference=reference, unavailable=unavailable, figures=coverage, **figures)

    if tested.sum() < n_forget:
        missing = n_forget - int(tested.sum())
        return lira(None, None, f"too few references: {missing} of {n_forget} forget records have fewer "
                                f"than {MIN_OUT_REFERENCES} references that never saw them; the pool must be "
                                f"refilled before this model can be audited", epsilon_lower_bound=None, flagged=[],
                                subjects_flagged=None)
    if null_values.size < MIN_NULL_RECORDS:
        return lira(None, None, f"only {null_values.size} unseen records to calibrate against "
                                f"(needs {MIN_NULL_RECORDS})", epsilon_lower_bound=None, flagged=[],
                                subjects_flagged=None)
    shift, spread = float(null_values.mean()), float(null_values.std(ddof=1))
    spread = max(spread, 1e-6)
    z_forget = (forget.values - shift) / spread
    z_null = (null_values - shift) / spread
    # A residual scaled by an estimated spread is t-distributed: its degrees of freedom are the
    # record's OUT references less one plus the prior's, and at most the null's.
    df = np.minimum(np.maximum(forget.out_counts - 1, 0) + PRIOR_DF, null_values.size - 1)
    p_values = stats.t.sf(z_forget, df=df)
    null_df = np.minimum(np.maximum(null.out_counts[null_kept] - 1, 0) + PRIOR_DF, null_values.size - 1)
    subjects = subject_test(p_values, forget_subjects, stats.t.sf(z_null, df=null_df),
                            None if null_subjects is None else np.asarray(null_subjects)[null_kept])
    # Two-sided per subject: far above unseen (still memorised) or far below it (over-forgotten).
    upper = subjects.p_values
    lower = stats.norm.cdf(subjects.z)
    two_sided = np.minimum(1.0, np.minimum(upper / (1 - UNFAMILIAR_SHARE), lower / UNFAMILIAR_SHARE))
    rejected = _holm(two_sided, alpha)
    familiar_subjects, unfamiliar_subjects = rejected & (subjects.z > 0), rejected & (subjects.z <= 0)
    flagged, unfamiliar = familiar_subjects[subjects.codes], unfamiliar_subjects[subjects.codes]
    threshold = float(stats.norm.ppf(1 - record_level))
    # The rates count subjects: a subject's records are one unit of evidence, not several.
    tested_subjects, null_subject_count = int(subjects.z.size), int(subjects.null_z.size)
    if not tested_subjects or not null_subject_count:
        return lira(None, None, "no subjects to test, or none unseen to calibrate against", epsilon_lower_bound=None,
                    flagged=[], subjects_flagged=None)
    tp, fp = int((subjects.z > threshold).sum()), int((subjects.null_z > threshold).sum())
    # The advantage's ends are one-sided 1 − α bounds (MOVER on the rates' exact limits). The ε
    # bound takes one end of each rate's interval at 1 − α, one-sided 1 − α/2 each, so together
    # they hold at 1 − α.
    estimate, advantage = rate_difference(tp, tested_subjects, fp, null_subject_count, interval_alpha(alpha))
    tpr_low, _ = clopper_pearson(tp, tested_subjects, alpha)
    _, fpr_high = clopper_pearson(fp, null_subject_count, alpha)
    epsilon = epsilon_lower_bound(tpr_low, fpr_high, delta)
    collapse = spread_test(subjects.z, subjects.null_z, alpha)
    ids = np.arange(n_forget) if record_ids is None else np.asarray(record_ids)
    result = lira(estimate, advantage, epsilon_lower_bound=epsilon,
                  flagged=[int(i) for i in ids[flagged]], unfamiliar=[int(i) for i in ids[unfamiliar]],
                  tpr=tp / tested_subjects, fpr=fp / null_subject_count, null_subjects=null_subject_count,
                  record_level=record_level, delta=delta, subjects_flagged=int(familiar_subjects.sum()),
                  subjects_unfamiliar=int(unfamiliar_subjects.sum()),
                  within_subject_correlation=subjects.correlation,
                  spread_ratio=None if collapse is None else collapse.ratio,
                  spread_ratio_upper=None if collapse is None else collapse.upper)
    if flagged.any() and result.verdict != "fail":
        reason = (f"{int(familiar_subjects.sum())} of {rejected.size} forget subjects "
                  f"({int(flagged.sum())} of {n_forget} records) are individually still recognisable "
                  f"(Holm-corrected p ≤ {alpha} over subjects); {result.reason}")
        return replace(result, verdict="fail", reason=reason)
    if unfamiliar.any() and result.verdict != "fail":
        reason = (f"{int(unfamiliar_subjects.sum())} of {rejected.size} forget subjects "
                  f"({int(unfamiliar.sum())} of {n_forget} records) are far less familiar than records the "
                  f"model never saw (Holm-corrected p ≤ {alpha} over subjects): over-forgetting gives them "
                  f"away; {result.reason}")
        return replace(result, verdict="fail", reason=reason)
    if collapse is not None and collapse.collapsed and result.verdict != "fail":
        reason = (f"the forget subjects' scores vary {collapse.ratio:.2f} times as much as unseen subjects' "
                  f"(at most {collapse.upper:.2f} at {1 - alpha:g}, below {MIN_SPREAD_RATIO}): a collapse no model "
                  f"that never saw them shows; {result.reason}")
        return replace(result, verdict="fail", reason=reason)
    if epsilon > 0 and result.verdict != "fail":
        reason = (f"the ε lower bound at {1 - alpha:g} is {epsilon:.3g} > 0: the forget records leak "
                  f"membership; {result.reason}")
        return replace(result, verdict="fail", reason=reason)
    return result


def _holm(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level α."""
    n = p_values.size
    rejected = np.zeros(n, dtype=bool)
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        if p_values[index] > alpha / (n - rank):
            break
        rejected[index] = True
    return rejected
