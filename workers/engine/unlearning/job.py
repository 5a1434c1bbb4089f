"""Producing the new model version of an unlearning job: exact (retrain, sisa), approximate
(finetune, neggrad_plus, scrub, salun) or certified (certified_newton), verified, and escalated
to the exact path when an approximate result misses its thresholds or the checks cannot see its
forget set (the no-op control, workers/engine/verification/control.py).

Everything here works on the typed snapshot of the model (`app.unlearning.types`) and the
records in memory; it stores artifacts but never touches the database. The sequencer
(`workers/unlearning.py`) hands the `VerifiedVersion` to `app.unlearning.service`.

A new approximate method plugs in as a module of this package registered in `base.METHODS`;
`approximate` runs any of them on every shard network of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import torch

from app.artifacts.store import get_store
from app.config import get_settings
from app.unlearning.types import (
    EXACT,
    SLICE_BY_RECORD,
    Escalation,
    JsonObject,
    JsonValue,
    Shard,
    Verification,
    VerifiedVersion,
)
from workers.engine.partition import HOLDOUT, Manifest, partition
from workers.engine.serialization import bytes_to_state, load_network, state_to_bytes
from workers.engine.shards import Resume, counted, train_shards
from workers.engine.training import StateDict, device_from_setting, frozen_predictions
from workers.engine.unlearning import base, repair, verification
from workers.engine.verification import control as no_op
from workers.engine.verification import references
from workers.engine.verification.checks import stored_checks
from workers.engine.unlearning.context import (
    RETAIN_SAMPLE,
    CandidateVersion,
    Context,
    context_for,
    halves,
    holdout_half,
    retain_sample,
)

__all__ = ["Context", "CandidateVersion", "approximate", "context_for", "exact_method", "no_op_control", "retrain", "run_method",
           "sisa", "unlearn", "without_forget"]

def unlearn(ctx: Context, requested: str, *, escalate: Callable[[Escalation], None],
            verifying: Callable[[], None] | None = None, settings: JsonObject | None = None) -> VerifiedVersion:
    """The requested method's result, verified; an approximate one that misses its thresholds,
    or whose forget set the checks cannot see (the no-op control), is reported to `escalate` and
    replaced by the exact path (`exact_method`). `settings` override the approximate
    method's defaults (validated: unknown or invalid ones raise). The manifest is stored.

    The control runs first for an approximate method: where it finds the forget set untestable,
    no result of the method could be certified, so the method is not run at all and the exact
    path starts at once (the escalation then carries no verdicts of its own)."""
    escalations: list[Escalation] = []
    # The control, the result and any fallback are all measured against the same original: its
    # forward passes (and those of SISA shards the erasure left alone) run once.
    with frozen_predictions():
        control: JsonObject | None = None
        if len(ctx.forget_ids) == 0:
            # The subjects were only among the holdout: the weights never saw them, so the version is
            # re-linked to the erased dataset version without retraining.
            outcome = CandidateVersion("none_needed", without_forget(ctx), ctx.old_shards, ctx.old_state,
                              {"note": "the subjects' records were held out; no weights saw them"})
            ran_with = outcome.settings
        elif requested in EXACT:
            outcome = run_method(ctx, requested, settings)
            ran_with = outcome.settings
        else:
            # The same checks on the model before unlearning, before the method spends anything.
            config = base.parse_method_config(requested, dict(settings or {}), ctx.spec.data_kind)
            control = no_op_control(ctx)
            if no_op.testable(control):
                outcome = run_method(ctx, requested, settings)
                ran_with = outcome.settings
            else:
                exact = exact_method(ctx)
                escalations.append(Escalation(from_method=requested, to_method=exact, reasons=(no_op.NO_POWER,)))
                escalate(escalations[-1])
                outcome = run_method(ctx, exact)
                # The settings the job started with, as they would have run.
                ran_with = base.dump_config(config)
        if verifying is not None:
            verifying()
        if control is None and len(ctx.forget_ids):
            # An exact method's job keeps the control too (its certificate carries both blocks).
            control = no_op_control(ctx)
        # Exact results, and a version no weight of which saw the subjects, need no check.
        outcome, figures, failed = verified(ctx, outcome, control)
        if outcome.method not in EXACT:
            if failed:
                exact = exact_method(ctx)
                escalations.append(Escalation(from_method=outcome.method, to_method=exact, reasons=tuple(failed),
                                              verdicts=figures.verdicts))
                escalate(escalations[-1])
                outcome = run_method(ctx, exact)
                figures = verification.verify_outcome(ctx, outcome, ctx.old_shards)
    if figures.lineage_proof.in_new_manifest:
        raise RuntimeError("the new manifest still lists erased records")
    manifest_sha = get_store().put_bytes(outcome.manifest.to_parquet())
    return VerifiedVersion(
        method=outcome.method, requested_method=requested, manifest_sha=manifest_sha, shards=outcome.shards,
        state=outcome.state, details=outcome.details, verification=figures, escalations=tuple(escalations),
        settings=ran_with, no_op_control=control,
    )


def no_op_control(ctx: Context) -> JsonObject:
    """The no-op control (workers/engine/verification/control.py): the model before unlearning
    verified as if it were the method's output, on the approximate methods' manifest, so against
    the same references and holdout as their results."""
    original = CandidateVersion(no_op.CONTROL_METHOD, without_forget(ctx), ctx.old_shards, ctx.old_state, {})
    return no_op.entry(verification.verify_outcome(ctx, original, ctx.old_shards).verdicts or {})


def exact_method(ctx: Context) -> str:
    """Where an approximate result cannot be certified: the affected SISA shards on a SISA model,
    else a retrain."""
    return "sisa" if ctx.sisa else "retrain"


def verified(ctx: Context, outcome: CandidateVersion, control: JsonObject | None) -> tuple[CandidateVersion, Verification, list[str]]:
    """The outcome's verification and why it fails (empty: verified; always empty for exact
    methods), judged against the no-op `control` (`no_op_control`). An approximate result
    blocked only by a few records the audit still recognises is repaired first
    (`workers/engine/unlearning/repair.py`) and verified again; not where the checks cannot see
    the subjects at all, as no repair makes them see.

    Where a repair could follow, the result may be looked at twice, so α is spent across both
    looks: each verdict is at α/2 (the first look's too, decided before it is taken), and a
    repaired result carries the first look's block under `details.repair.first_look`."""
    if outcome.method in EXACT:
        return outcome, verification.verify_outcome(ctx, outcome, ctx.old_shards), []
    alpha = get_settings().verification_alpha / 2 if can_repair(ctx, outcome) else None
    figures = verification.verify_outcome(ctx, outcome, ctx.old_shards, alpha=alpha)
    failed = verification.check_outcome(outcome, figures, control)
    flagged = repair.repairable(stored_checks(figures.verdicts)) if failed and no_op.testable(control) else []
    fixed = repaired(ctx, outcome, np.asarray(flagged, dtype=np.int64)) if flagged else None
    if fixed is None:
        return outcome, figures, failed
    again = verification.verify_outcome(ctx, fixed, ctx.old_shards, alpha=alpha)
    still = verification.check_outcome(fixed, again, control)
    if still:
        return outcome, figures, failed + [f"a repair of the {len(flagged)} flagged records did not pass either: "
                                           + "; ".join(still)]
    details = dict(fixed.details)
    details["repair"] = {**dict(_mapping(details.get("repair"))), "first_look": figures.verdicts}
    return replace(fixed, details=details), again, []


def _mapping(value: JsonValue) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def can_repair(ctx: Context, outcome: CandidateVersion) -> bool:
    """Whether a repair can follow this outcome's verification (`repaired`): a repairable method's
    single network, a tabular model (not text, not images) with references to aim at."""
    return (base.get_method(outcome.method).repairable and len(outcome.shards) == 1
            and ctx.spec.data_kind == "tabular" and bool(ctx.references))


def repaired(ctx: Context, outcome: CandidateVersion, flagged: npt.NDArray[np.int64]) -> CandidateVersion | None:
    """neggrad_plus on the flagged records alone, each aimed at its OUT references' loss, from
    the outcome's weights; None where there are no per-record targets (no references, a SISA
    model, no unseen records, a language model) or the method's result may not be repaired (the
    certified one)."""
    if not can_repair(ctx, outcome):
        return None
    store = get_store()
    forget = ctx.old_records.rows_for(np.sort(flagged))
    unseen = _unseen(ctx)
    targets = _forget_targets(ctx, forget, unseen, ids=np.sort(flagged))
    if targets is None:
        return None
    retain = ctx.old_records.rows_for(retain_sample(ctx))
    data = base.ForgetRetain(*forget, *retain, unseen_x=unseen[0], unseen_y=unseen[1],
                             trained_records=int((ctx.old_manifest.shards != HOLDOUT).sum()), forget_target_loss=targets)
    network = load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(outcome.shards[0].weights))
    result = base.get_method("neggrad_plus").run(base.MethodCall(
        ctx.family, network, ctx.config, data, base.parse_method_config("neggrad_plus", repair.SETTINGS), seed=ctx.seed))
    weights = store.put_bytes(state_to_bytes({k: v.detach() for k, v in result.network.state_dict().items()},
                                             {"shard": "0"}))
    details: JsonObject = {**outcome.details, "repair": {
        "records": [int(i) for i in np.sort(flagged)], "method": "neggrad_plus", "settings": dict(repair.SETTINGS),
        "steps": result.details.get("steps"), "stopped_at_step": result.details.get("stopped_at_step")}}
    return replace(outcome, shards=(Shard(shard=0, weights=weights, checkpoints=(), records=outcome.shards[0].records),),
                   details=details)


def run_method(ctx: Context, name: str, settings: JsonObject | None = None) -> CandidateVersion:
    if name == "retrain":
        return retrain(ctx)
    if name == "sisa":
        return sisa(ctx)
    return approximate(ctx, name, settings)


def retrain(ctx: Context, training_seed: int | None = None) -> CandidateVersion:
    """Train from scratch on the records that stay, partitioned under the model's seed; the
    training itself under `training_seed` where given (the rehearsal's second retrain), else the
    model's seed."""
    manifest = _new_partition(ctx)
    shard_count = ctx.sisa.shards if ctx.sisa else 1
    trained = train_shards(
        family=ctx.family, config=ctx.config, shape=ctx.shape, records=ctx.new_records, manifest=manifest,
        seed=ctx.seed if training_seed is None else training_seed, sisa=ctx.sisa, shard_list=list(range(shard_count)),
        progress=ctx.progress, label="retrain: ",
    )
    return CandidateVersion("retrain", manifest, tuple(trained[s] for s in range(shard_count)), {},
                   {"shards_retrained": shard_count})


def sisa(ctx: Context) -> CandidateVersion:
    """Retrain only the shards holding forget records, each from its checkpoint before the first
    affected slice; unaffected shards keep their weights and checkpoints."""
    if not ctx.sisa:
        raise ValueError("the sisa method needs a model trained with SISA")
    if not ctx.same_lineage:
        outcome = retrain(ctx)
        return replace(outcome, method="sisa",
                       details={**outcome.details, "note": "dataset changed since training: all shards retrained"})
    manifest = _new_partition(ctx)
    forget = np.isin(ctx.old_manifest.record_ids, ctx.forget_ids) & (ctx.old_manifest.shards != HOLDOUT)
    first_slice: dict[int, int] = {}
    for shard, slice_index in zip(ctx.old_manifest.shards[forget].tolist(), ctx.old_manifest.slices[forget].tolist()):
        first_slice[shard] = min(slice_index, first_slice.get(shard, slice_index))
    store = get_store()
    resume: Resume = {}
    for shard, start in first_slice.items():
        old = ctx.old_shards[shard]
        state: StateDict | None = None
        if start > 0:
            state, _ = bytes_to_state(store.get_bytes(old.checkpoints[start - 1]))
        for r in range(start):  # the slices before the first affected one are unchanged by design
            if not np.array_equal(manifest.slice_ids(shard, r), ctx.old_manifest.slice_ids(shard, r)):
                raise RuntimeError(f"shard {shard} slice {r} changed although it held no erased record")
        resume[shard] = (start, state, old.checkpoints)
    trained = train_shards(
        family=ctx.family, config=ctx.config, shape=ctx.shape, records=ctx.new_records, manifest=manifest,
        seed=ctx.seed, sisa=ctx.sisa, shard_list=sorted(first_slice), resume=resume, progress=ctx.progress,
        label="sisa: ",
    )
    # Every shard's records from the new manifest: the retrained ones' fell, the kept ones' stay.
    shards = counted([trained.get(s, ctx.old_shards[s]) for s in range(ctx.sisa.shards)], manifest)
    details: dict[str, JsonValue] = {
        "shards_retrained": sorted(first_slice), "from_slice": {str(s): k for s, k in first_slice.items()},
        "slices_retrained": sum(ctx.sisa.slices - k for k in first_slice.values()),
        "slices_total": ctx.sisa.shards * ctx.sisa.slices,
    }
    return CandidateVersion("sisa", manifest, shards, {}, details)


def approximate(ctx: Context, method_name: str, settings: JsonObject | None = None) -> CandidateVersion:
    """Apply an approximate or certified method to the current network(s) of the model, with
    `settings` overriding its defaults (checked before anything runs)."""
    method = base.get_method(method_name, ctx.spec.data_kind)
    config = base.parse_method_config(method_name, dict(settings or {}), ctx.spec.data_kind)
    store = get_store()
    forget_x, forget_y = ctx.old_records.rows_for(np.sort(ctx.forget_ids))
    retain_ids = retain_sample(ctx, limit=RETAIN_SAMPLE if method.samples_retain else None)
    retain_x, retain_y = ctx.old_records.rows_for(retain_ids)
    unseen = _unseen(ctx)
    trained = int((ctx.old_manifest.shards != HOLDOUT).sum())
    correct = _reference_correctness(ctx, (forget_x, forget_y), unseen)
    data = base.ForgetRetain(forget_x, forget_y, retain_x, retain_y, unseen_x=unseen[0], unseen_y=unseen[1],
                             trained_records=trained,
                             forget_target_loss=_forget_targets(ctx, (forget_x, forget_y), unseen),
                             forget_reference_correct=None if correct is None else correct[0],
                             unseen_reference_correct=None if correct is None else correct[1])
    shards: list[Shard] = []
    details: JsonObject = {}
    # On OBLIVIATE_DEVICE, as training and the exact methods are (the methods move their data to
    # the network's device and draw their randomness on the CPU).
    device = device_from_setting(get_settings().device)
    for index, old in enumerate(ctx.old_shards):
        network = load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(old.weights)).to(device)
        result = method.run(base.MethodCall(ctx.family, network, ctx.config, data, config, seed=ctx.seed,
                                            progress=ctx.progress))
        weights = store.put_bytes(state_to_bytes({k: v.detach() for k, v in result.network.state_dict().items()},
                                                 {"shard": str(index)}))
        shards.append(Shard(shard=index, weights=weights, checkpoints=()))
        details = result.details
    manifest = without_forget(ctx)
    return CandidateVersion(method_name, manifest, counted(shards, manifest), method.next_state(ctx.old_state, details),
                            details, settings=base.dump_config(config))


def _unseen(ctx: Context) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Records no version saw (a holdout sample), for the stopping rules that aim at their loss
    (neggrad_plus, scrub)."""
    unseen_ids = ctx.old_manifest.record_ids[ctx.old_manifest.shards == HOLDOUT]
    unseen_ids = np.sort(unseen_ids[np.isin(unseen_ids, ctx.new_records.record_ids)])
    # The tuning half of the holdout: the verdict judges with the other (context.holdout_half).
    unseen_ids = holdout_half(ctx, unseen_ids, confirmation=False)[:RETAIN_SAMPLE]
    if not len(unseen_ids):
        return None, None
    x, y = ctx.new_records.rows_for(unseen_ids)
    return x, y


def _forget_targets(ctx: Context, forget: tuple[torch.Tensor, torch.Tensor],
                    unseen: tuple[torch.Tensor | None, torch.Tensor | None],
                    ids: npt.NDArray[np.int64] | None = None) -> torch.Tensor | None:
    """Each forget record's loss under the tuning half's references that never saw it, shifted to
    the model (`references.forget_loss_targets`), for the per-record stopping rule; None for a
    SISA model, without references or without unseen records."""
    unseen_x, unseen_y = unseen
    tuning = halves(ctx).tuning
    if len(ctx.old_shards) != 1 or not tuning or unseen_x is None or unseen_y is None \
            or ctx.spec.data_kind != "tabular":
        return None
    store = get_store()
    target = load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(ctx.old_shards[0].weights))
    ids = np.sort(ctx.forget_ids) if ids is None else ids
    keys = ctx.old_records.subject_keys[np.searchsorted(ctx.old_records.record_ids, ids)].tolist()
    found = references.forget_loss_targets(
        ctx.family, target, references.networks(tuning, ctx.family, ctx.config, ctx.shape), forget,
        references.out_mask(tuning, keys), (unseen_x, unseen_y))
    return None if found is None else torch.from_numpy(found)


def _reference_correctness(ctx: Context, forget: tuple[torch.Tensor, torch.Tensor],
                           unseen: tuple[torch.Tensor | None, torch.Tensor | None]
                           ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """What the calibrated accuracy gap reads, from the tuning half of the references and of the
    holdout (`references.reference_correctness`), for the stopping rule that aims at that gap
    (stopping.CalibratedGap); the verdict reads the confirmation halves. None where
    `_forget_targets` has none (a SISA model, no references, no unseen records)."""
    unseen_x, unseen_y = unseen
    tuning = halves(ctx).tuning
    if len(ctx.old_shards) != 1 or not tuning or unseen_x is None or unseen_y is None \
            or ctx.spec.data_kind != "tabular":
        return None
    keys = ctx.old_records.subject_keys[np.searchsorted(ctx.old_records.record_ids, np.sort(ctx.forget_ids))].tolist()
    found = references.reference_correctness(ctx.family, references.networks(tuning, ctx.family, ctx.config, ctx.shape),
                                             forget, references.out_mask(tuning, keys), (unseen_x, unseen_y))
    return None if found is None else (torch.from_numpy(found[0]), torch.from_numpy(found[1]))


def _new_partition(ctx: Context) -> Manifest:
    """The partition of the new dataset version's records. On the same lineage, where every record
    that stays is in the old manifest, it is read from there: a record's holdout, shard and slice
    depend only on the seed, its subject key and its id (workers/engine/partition.py), so the
    result is the partition itself, without hashing every record of the dataset again."""
    ids = ctx.new_records.record_ids
    old = ctx.old_manifest
    if ctx.same_lineage and len(old.record_ids):
        order = np.argsort(old.record_ids, kind="stable")
        rows = order[np.minimum(np.searchsorted(old.record_ids, ids, sorter=order), len(order) - 1)]
        if np.array_equal(old.record_ids[rows], ids):
            return Manifest(ids.astype(np.int64), old.shards[rows].astype(np.int64), old.slices[rows].astype(np.int64))
    return partition(
        ctx.new_records.record_ids, ctx.new_records.subject_keys, seed=ctx.seed,
        holdout_fraction=ctx.holdout_fraction, shards=ctx.sisa.shards if ctx.sisa else 1,
        slices=ctx.sisa.slices if ctx.sisa else 1, slice_key=ctx.sisa.slice_key if ctx.sisa else SLICE_BY_RECORD,
    )


def without_forget(ctx: Context) -> Manifest:
    """The old manifest less the forget records and the records the new dataset lacks."""
    keep = ~np.isin(ctx.old_manifest.record_ids, ctx.forget_ids) & np.isin(ctx.old_manifest.record_ids,
                                                                           ctx.new_records.record_ids)
    return Manifest(ctx.old_manifest.record_ids[keep], ctx.old_manifest.shards[keep], ctx.old_manifest.slices[keep])
