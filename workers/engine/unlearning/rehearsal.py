"""The unlearning rehearsal's maths (issues 11 and 21): erase random samples of a model's trained
subjects in memory, retrain without each sample with two training seeds (the yardstick and its
own spread), run every approximate method's candidate settings on the current weights, and judge
each one as a real job would plus how close it comes to the retrains.

A rehearsal cannot cherry-pick: it draws `draws` (at least 3) samples of subjects, and on each
draw retrains `seeds` (at least 2) times. On a draw, a candidate passes when the service's own
verification passes it (`verify_outcome` and `check_outcome` against the model's references and
the no-op control, exactly as in a job) and each of its gaps to the mean of that draw's retrains
is shown equivalent to 0 by TOST (two one-sided t-tests at level `TOST_ALPHA`) within its bound
below, the noise being the retrains' own spread (pooled over draws, `Spread`). Candidates are
ranked by their pass rate across draws first and their cost second; one passes the rehearsal
when it passed at least `PASS_RATE` of the draws. A candidate that can no longer reach that rate,
and that a draw has already failed, is not run on its remaining draws (`decided`): nothing they
could show would change its verdict. Nor is any candidate run on a draw whose no-op control finds
it untestable (the checks pass the model before unlearning, so no result could pass there and
its verdict would say nothing of the method): that draw reads `UNTESTABLE`. Where fewer draws
are testable than the pass rate needs, no candidate could pass the rehearsal whatever it did, so
neither the retrains nor the candidates run: every candidate is inconclusive (method choice
counts it as not tried) and the rehearsal costs the controls alone. Costs are CPU seconds
(`time.process_time`) as a fraction of a retrain's, so they compare across machines. The caller
runs this inside `scratch()`: nothing trained here reaches the artifact store.

This is a rehearsal of the service's verification on the model itself; it runs no shadow
models, so it reports no ε of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from app.unlearning.types import Figures, JsonObject, JsonValue
from workers.engine.records import Records, TextRecords
from workers.engine.unlearning import base, verification
from workers.engine.unlearning.context import Context, Ids
from workers.engine.unlearning.job import approximate, no_op_control, retrain, verified
from workers.engine.verification import control as no_op

# Equivalence margins: largest |candidate − retrain| a candidate may be shown within, each as a
# fraction (0.05 = 5 points): accuracy on the forget records, accuracy on the holdout (test)
# records, and the loss-threshold membership AUC of forget against holdout records.
FORGET_ACCURACY_BOUND = 0.05
HOLDOUT_ACCURACY_BOUND = 0.02
MIA_AUC_BOUND = 0.03
BOUNDS: dict[str, float] = {"forget_accuracy": FORGET_ACCURACY_BOUND, "holdout_accuracy": HOLDOUT_ACCURACY_BOUND,
                            "mia_auc": MIA_AUC_BOUND}
# The level of each one-sided test of TOST.
TOST_ALPHA = 0.05
# The least share of draws a candidate must pass to pass the rehearsal (2 of 3).
PASS_RATE = 2 / 3
# A draw's verdict where the candidate was not run on it: it had already failed too many draws
# to pass (`decided`).
SKIPPED = "skipped"
# A draw's verdict where the candidate was not run on it because the draw's no-op control found
# it untestable: the checks pass the model before unlearning there, so no result could pass.
UNTESTABLE = "untestable"
NOT_SEEN = ("the checks cannot see the subjects of {untestable} of {draws} draws (their no-op control passes "
            "the model before unlearning), so no result could pass there")
# The fewest draws and retrain seeds a rehearsal runs (the settings cannot go below them).
MIN_DRAWS = 3
MIN_SEEDS = 2

# Candidate settings per method, as overrides of its defaults: the defaults and a variant or two,
# about eight runs for a tabular family (CPU time matters). SalUn's mask fraction is chosen here.
GRID: dict[str, tuple[JsonObject, ...]] = {
    "finetune": ({}, {"epochs": 10}),
    "neggrad_plus": ({}, {"learning_rate": 0.003}),
    "scrub": ({}, {"rewind": True}),
    "salun": ({"mask_fraction": 0.1}, {"mask_fraction": 0.3}, {"mask_fraction": 0.5}),
    "certified_newton": ({},),
    "gradient_difference": ({}, {"steps": 120}),
    "npo": ({}, {"steps": 120}),
}

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Spread:
    """The retrains' own spread per figure: the standard deviation between retrains of the same
    draw under different training seeds, pooled over the draws, with its degrees of freedom."""

    sd: dict[str, float]
    dof: int

    def to_json(self) -> dict[str, JsonValue]:
        return {"sd": {name: round(value, 6) for name, value in self.sd.items()}, "dof": self.dof}


@dataclass(frozen=True)
class Draw:
    """One sample of subjects erased in memory: its context, the retrains' figures (one entry per
    training seed) and the no-op control."""

    ctx: Context
    retrains: list[dict[str, float | None]]
    control: JsonObject


@dataclass(frozen=True)
class Rehearsal:
    subjects: int
    forget_records: int
    retrain_cpu_s: float
    results: tuple[dict[str, JsonValue], ...]
    draws: int = MIN_DRAWS
    retrain_seeds: int = MIN_SEEDS
    spread: dict[str, JsonValue] = field(default_factory=dict)
    # Draws whose no-op control found them untestable: no candidate was run on them.
    untestable_draws: int = 0


def sample_subjects(ctx: Context, count: int, draw: int = 0) -> list[str]:
    """Up to `count` subjects the current version trained on, drawn under the model's seed and
    the draw's number; at most half of them, so that something is left to retain."""
    trained = np.isin(ctx.old_records.record_ids, ctx.old_manifest.trained_ids())
    subjects = sorted(set(ctx.old_records.subject_keys[trained].tolist()))
    rng = np.random.default_rng([ctx.seed, 0x5EA, draw])
    picked = rng.choice(len(subjects), size=min(count, len(subjects) // 2), replace=False)
    return [subjects[i] for i in sorted(picked.tolist())]


def sample_draws(ctx: Context, count: int, draws: int) -> list[list[str]]:
    """`draws` independent samples of `count` subjects (none when fewer than two were trained)."""
    found = [sample_subjects(ctx, count, draw) for draw in range(draws)]
    return found if all(found) else []


def erased(ctx: Context, keys: Sequence[str]) -> Context:
    """The context of a job that erased these subjects: their trained records are the forget
    set and the 'new' records are the old ones without any of theirs."""
    gone = np.isin(ctx.old_records.subject_keys, list(keys))
    forget: Ids = np.intersect1d(ctx.old_records.record_ids[gone], ctx.old_manifest.trained_ids())
    return replace(ctx, forget_ids=forget, new_records=_without(ctx.old_records, ~gone), same_lineage=True)


def _without(records: Records, keep: np.ndarray) -> Records:
    if isinstance(records, TextRecords):
        ids = records.record_ids[keep]
        windows = np.isin(records.labels, ids)
        return TextRecords(record_ids=ids, subject_keys=records.subject_keys[keep], features=records.features[windows],
                           labels=records.labels[windows], texts=[t for t, k in zip(records.texts, keep.tolist()) if k])
    return Records(record_ids=records.record_ids[keep], subject_keys=records.subject_keys[keep],
                   features=records.features[keep], labels=records.labels[keep])


def candidates(methods: Sequence[str]) -> list[tuple[str, JsonObject]]:
    return [(method, settings) for method in methods for settings in GRID.get(method, ({},))]


def rehearse(ctx: Context, draws: Sequence[Sequence[str]], methods: Sequence[str], *, seeds: int = MIN_SEEDS,
             progress: Progress | None = None, check: Callable[[], None] | None = None) -> Rehearsal:
    """For each draw of subjects, retrain without them under `seeds` training seeds; then judge
    every candidate of `methods` on every draw against those retrains."""
    if len(draws) < MIN_DRAWS or seeds < MIN_SEEDS:
        raise ValueError(f"a rehearsal needs at least {MIN_DRAWS} draws and {MIN_SEEDS} retrain seeds")
    tried = candidates(methods)
    total = len(draws) * (seeds + len(tried))
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if check is not None:
            check()
        if progress is not None:
            progress(done / total, label)

    # The controls first: they need no retrain, and they say which draws a candidate could pass.
    erased_ctxs = [erased(ctx, keys) for keys in draws]
    controls = [no_op_control(erased_ctx) for erased_ctx in erased_ctxs]
    testable = [no_op.testable(control) for control in controls]
    needed = math.ceil((PASS_RATE - 1e-9) * len(draws))
    untestable = len(draws) - sum(testable)
    forget_records = sum(int(len(c.forget_ids)) for c in erased_ctxs)
    if sum(testable) < needed:
        # No candidate could pass the rehearsal: nothing is retrained and nothing is run.
        reason = NOT_SEEN.format(untestable=untestable, draws=len(draws)) + f"; {needed} must be passed, so none was run"
        if progress is not None:
            progress(1.0, "no candidate could pass: too few draws are testable")
        results = [_summary(method, settings, [UNTESTABLE if not t else SKIPPED for t in testable], reasons=[reason])
                   for method, settings in tried]
        return Rehearsal(subjects=max(len(k) for k in draws), forget_records=forget_records, retrain_cpu_s=0.0,
                         results=tuple(results), draws=len(draws), retrain_seeds=seeds, untestable_draws=untestable)
    prepared: list[Draw] = []
    retrain_cpu: list[float] = []
    for erased_ctx, control in zip(erased_ctxs, controls):
        retrains = []
        for seed in range(seeds):
            step("retraining the yardstick")
            started = time.process_time()
            yardstick = retrain(erased_ctx, training_seed=ctx.seed + seed)
            retrain_cpu.append(max(time.process_time() - started, 1e-9))
            retrains.append(_figures(verification.verify_outcome(erased_ctx, yardstick, erased_ctx.old_shards).after))
        # Judged as a job judges: a candidate passes only where the checks fail the original.
        prepared.append(Draw(erased_ctx, retrains, control))
    # Every draw's retrains count towards the spread, testable or not: the retrains' own noise.
    spread = retrain_spread([d.retrains for d in prepared])
    cpu_per_retrain = sum(retrain_cpu) / len(retrain_cpu)
    reasons = [NOT_SEEN.format(untestable=untestable, draws=len(draws))] if untestable else []
    results = []
    for method, settings in tried:
        outcomes: list[Judged | str] = []
        for index, draw in enumerate(prepared):
            judged = [o for o in outcomes if isinstance(o, Judged)]
            if not testable[index]:
                step(f"skipping {method}: the checks cannot see this draw's subjects")
                outcomes.append(UNTESTABLE)
            elif decided(judged, sum(testable[index:]), needed):
                step(f"skipping {method}: it can no longer pass")
                outcomes.append(SKIPPED)
            else:
                step(f"rehearsing {method}")
                outcomes.append(_judge(draw, method, settings, spread, cpu_per_retrain))
        results.append(_summary(method, settings, outcomes, reasons=reasons))
    return Rehearsal(subjects=max(len(k) for k in draws), forget_records=forget_records,
                     retrain_cpu_s=round(cpu_per_retrain, 4), results=tuple(results), draws=len(draws),
                     retrain_seeds=seeds, spread=spread.to_json(), untestable_draws=untestable)


def _figures(after: Figures) -> dict[str, float | None]:
    return {"forget_accuracy": after.forget.accuracy, "holdout_accuracy": after.holdout.accuracy,
            "mia_auc": after.mia_auc}


def retrain_spread(draws: Sequence[Sequence[dict[str, float | None]]]) -> Spread:
    """Per figure, the retrains' standard deviation within a draw, pooled over the draws (each draw
    gives seeds − 1 degrees of freedom)."""
    sd: dict[str, float] = {}
    dof = 0
    for name in BOUNDS:
        squares, freedom = 0.0, 0
        for retrains in draws:
            values = [v for v in (r.get(name) for r in retrains) if v is not None]
            if len(values) >= 2:
                squares += float(np.var(values, ddof=1)) * (len(values) - 1)
                freedom += len(values) - 1
        sd[name] = math.sqrt(squares / freedom) if freedom else 0.0
        dof = max(dof, freedom)
    return Spread(sd=sd, dof=dof)


def equivalent(gap: float, margin: float, sd: float, seeds: int, dof: int) -> bool:
    """TOST: whether the gap of one run to the mean of `seeds` retrains is shown within ±`margin`,
    each one-sided test at TOST_ALPHA, the noise of either side the retrains' spread `sd`."""
    se = sd * math.sqrt(1 + 1 / seeds)
    t = float(stats.t.ppf(1 - TOST_ALPHA, max(dof, 1)))
    return gap - t * se > -margin and gap + t * se < margin


@dataclass(frozen=True)
class Judged:
    """A candidate on one draw."""

    verdict: str
    reasons: list[str]
    gaps: dict[str, float | None]
    cost: float
    cpu_s: float
    passed: bool


def _judge(draw: Draw, method: str, settings: JsonObject, spread: Spread, retrain_cpu: float) -> Judged:
    ctx = draw.ctx
    started = time.process_time()
    try:
        outcome = approximate(ctx, method, settings)
    except base.UnlearningDiverged as exc:
        cpu = time.process_time() - started
        return Judged("fail", [f"fail: {exc}"], {name: None for name in BOUNDS}, cpu / retrain_cpu, cpu, False)
    # Judged as a job judges it, a repair of a few flagged records included (its cost counts).
    outcome, figures, failed = verified(ctx, outcome, draw.control)
    cpu = time.process_time() - started
    block = figures.verdicts or {}
    verdict = "pass" if not failed else str(block.get("verdict") if block.get("verdict") not in (None, "pass") else "fail")
    found = _figures(figures.after)
    reasons = list(failed)
    gaps: dict[str, float | None] = {}
    for name, margin in BOUNDS.items():
        retrains = [v for v in (r[name] for r in draw.retrains) if v is not None]
        value = found[name]
        if value is None or not retrains:
            gaps[name] = None
            reasons.append(f"inconclusive: no {name.replace('_', ' ')} to compare with the retrains")
            continue
        gap = value - sum(retrains) / len(retrains)
        gaps[name] = gap
        if not equivalent(gap, margin, spread.sd[name], len(retrains), spread.dof):
            reasons.append(f"fail: {name.replace('_', ' ')} {gap:+.3f} from the retrains is not shown within "
                           f"±{margin:.3f} (TOST at α = {TOST_ALPHA}, retrains' spread {spread.sd[name]:.3f})")
    within = len(reasons) == len(failed)
    if verdict == "pass" and not within:
        verdict = "fail" if any(r.startswith("fail: ") for r in reasons) else "inconclusive"
    return Judged(verdict, reasons, gaps, cpu / retrain_cpu, cpu, verdict == "pass")


def decided(judged: Sequence[Judged], remaining: int, needed: int) -> bool:
    """Whether a candidate's summary no longer depends on the `remaining` draws: even if it passed
    every one it would stay short of `needed` passes, and a draw has already failed it, which
    makes its verdict "fail" whatever the rest say (an inconclusive-only record keeps going: a
    later fail would change the verdict method choice reads). Its remaining draws are skipped."""
    passes = sum(1 for j in judged if j.passed)
    return passes + remaining < needed and any(j.verdict == "fail" for j in judged)


def _summary(method: str, settings: JsonObject, outcomes: Sequence[Judged | str], *,
             reasons: Sequence[str] = ()) -> dict[str, JsonValue]:
    """A candidate across the draws, in draw order (a Judged where it ran, else why not: `SKIPPED`
    or `UNTESTABLE`): its pass rate (a draw not run counts as not passed), mean |gap| per figure
    and mean cost over the draws it ran (None where it ran on none), and the verdict that method
    choice reads (pass; fail on evidence; inconclusive when no draw failed, or none ran).
    `reasons` about the rehearsal as a whole come first."""
    judged = [o for o in outcomes if isinstance(o, Judged)]
    rate = sum(1 for j in judged if j.passed) / len(outcomes)
    passed = rate >= PASS_RATE - 1e-9
    verdict = "pass" if passed else "fail" if any(j.verdict == "fail" for j in judged) else "inconclusive"
    gaps: dict[str, JsonValue] = {}
    for name in BOUNDS:
        values = [j.gaps[name] for j in judged]
        known = [abs(v) for v in values if v is not None]
        gaps[name] = round(sum(known) / len(known), 6) if known and len(known) == len(values) else None
    found: list[JsonValue] = list(reasons)
    for j in judged:
        found.extend(r for r in j.reasons if r not in found)
    no_gaps: dict[str, JsonValue] = {name: None for name in BOUNDS}
    draws: list[JsonValue] = [
        {"verdict": o.verdict, "passed": o.passed,
         "gaps": {name: None if v is None else round(v, 6) for name, v in o.gaps.items()}}
        if isinstance(o, Judged) else {"verdict": o, "passed": False, "gaps": dict(no_gaps)} for o in outcomes]
    return {"method": method, "settings": dict(settings), "verdict": verdict, "reasons": found, "gaps": gaps,
            "cost": round(sum(j.cost for j in judged) / len(judged), 4) if judged else None,
            "cpu_s": round(sum(j.cpu_s for j in judged), 4), "pass_rate": round(rate, 6), "draws": draws,
            "passed": passed}
