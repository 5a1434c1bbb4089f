"""The unlearning rehearsal's maths (issue 11): erase a random sample of a model's trained
subjects in memory, retrain without them once (the yardstick), run every approximate method's
candidate settings on the current weights, and judge each one as a real job would plus how close
it comes to the retrain.

A candidate **passes** when the service's own verification passes it (`verify_outcome` and
`check_outcome` against the model's references and the no-op control, exactly as in a job) and
each gap to the retrain is within its bound below. Costs are CPU seconds (`time.process_time`) as a fraction of the
retrain's, so they compare across machines. The caller runs this inside `scratch()`: nothing
trained here reaches the artifact store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from app.unlearning.types import Figures, JsonObject, JsonValue
from workers.engine.records import Records, TextRecords
from workers.engine.unlearning import base, verification
from workers.engine.unlearning.context import Context, Ids
from workers.engine.unlearning.job import approximate, no_op_control, retrain, verified

# Largest |candidate − retrain| allowed for a pass, each as a fraction (0.05 = 5 points):
# accuracy on the forget records, accuracy on the holdout (test) records, and the loss-threshold
# membership AUC of forget against holdout records.
FORGET_ACCURACY_BOUND = 0.05
HOLDOUT_ACCURACY_BOUND = 0.02
MIA_AUC_BOUND = 0.03
BOUNDS: dict[str, float] = {"forget_accuracy": FORGET_ACCURACY_BOUND, "holdout_accuracy": HOLDOUT_ACCURACY_BOUND,
                            "mia_auc": MIA_AUC_BOUND}

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
class Rehearsal:
    subjects: int
    forget_records: int
    retrain_cpu_s: float
    results: tuple[dict[str, JsonValue], ...]


def sample_subjects(ctx: Context, count: int) -> list[str]:
    """Up to `count` subjects the current version trained on, drawn under the model's seed; at
    most half of them, so that something is left to retain."""
    trained = np.isin(ctx.old_records.record_ids, ctx.old_manifest.trained_ids())
    subjects = sorted(set(ctx.old_records.subject_keys[trained].tolist()))
    rng = np.random.default_rng([ctx.seed, 0x5EA])
    picked = rng.choice(len(subjects), size=min(count, len(subjects) // 2), replace=False)
    return [subjects[i] for i in sorted(picked.tolist())]


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


def rehearse(ctx: Context, keys: Sequence[str], methods: Sequence[str], *, progress: Progress | None = None,
             check: Callable[[], None] | None = None) -> Rehearsal:
    """Retrain without the subjects once, then judge every candidate of `methods` against it."""
    ctx = erased(ctx, keys)
    tried = candidates(methods)
    total = len(tried) + 1
    started = time.process_time()
    yardstick = retrain(ctx)
    retrain_cpu = max(time.process_time() - started, 1e-9)
    target = verification.verify_outcome(ctx, yardstick, ctx.old_shards).after
    # Judged as a job judges: a candidate passes only where the checks fail the original.
    control = no_op_control(ctx)
    results = []
    for done, (method, settings) in enumerate(tried, start=1):
        if check is not None:
            check()
        if progress is not None:
            progress(done / total, f"rehearsing {method}")
        results.append(_judge(ctx, method, settings, target, retrain_cpu, control))
    return Rehearsal(subjects=len(keys), forget_records=int(len(ctx.forget_ids)), retrain_cpu_s=round(retrain_cpu, 4),
                     results=tuple(results))


def _judge(ctx: Context, method: str, settings: JsonObject, target: Figures, retrain_cpu: float,
           control: JsonObject) -> dict[str, JsonValue]:
    started = time.process_time()
    try:
        outcome = approximate(ctx, method, settings)
    except base.UnlearningDiverged as exc:
        cpu = time.process_time() - started
        return {"method": method, "settings": dict(settings), "verdict": "fail", "reasons": [str(exc)],
                "gaps": {name: None for name in BOUNDS}, "cost": round(cpu / retrain_cpu, 4), "cpu_s": round(cpu, 4),
                "passed": False}
    # Judged as a job judges it, a repair of a few flagged records included (its cost counts).
    outcome, figures, failed = verified(ctx, outcome, control)
    cpu = time.process_time() - started
    block = figures.verdicts or {}
    verdict = "pass" if not failed else str(block.get("verdict") if block.get("verdict") not in (None, "pass") else "fail")
    after = figures.after
    gaps = {
        "forget_accuracy": _gap(after.forget.accuracy, target.forget.accuracy),
        "holdout_accuracy": _gap(after.holdout.accuracy, target.holdout.accuracy),
        "mia_auc": _gap(after.mia_auc, target.mia_auc),
    }
    within = all(gap is not None and gap <= BOUNDS[name] for name, gap in gaps.items())
    gap_values: dict[str, JsonValue] = {name: gap for name, gap in gaps.items()}
    return {"method": method, "settings": dict(settings), "verdict": verdict, "reasons": list(failed),
            "gaps": gap_values, "cost": round(cpu / retrain_cpu, 4), "cpu_s": round(cpu, 4),
            "passed": verdict == "pass" and within}


def _gap(value: float | None, yardstick: float | None) -> float | None:
    return None if value is None or yardstick is None else round(abs(value - yardstick), 6)
