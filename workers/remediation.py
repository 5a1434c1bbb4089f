"""Remediation jobs (docs/remediation.md): remove a slice of a dataset, then from every model
trained on it (exact, SISA or approximate with its verdicts, escalated as for an erasure), with
the checks the request's kind asks for, destroy what held the slice, and certify.

This module only sequences the steps: the rows are `app.remediation.execution`'s, each step in
a unit of work of its own and safe to repeat; the maths are the unlearning engine's and
`workers.engine.verification.slices`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from app.artifacts.store import get_store
from app.datasets.ingest import read_version_table
from app.db import session_scope
from app.remediation import execution
from app.remediation.types import RemediationPlan, SliceErasure
from app.unlearning import service as unlearning_service
from app.unlearning.types import Escalation, JobAttempt, Shard
from workers import destruction
from workers.engine.serialization import load_network
from workers.engine.unlearning import job as unlearning
from workers.engine.verification import slices as checks
from workers.jobs import JobContext
from workers.training import begin

log = logging.getLogger("obliviate.remediation")


def run(context: JobContext) -> None:
    attempt = begin(context)
    with session_scope() as session:
        plan = execution.start(session, attempt)
    if plan is None:
        with session_scope() as session:
            execution.complete(session, attempt)
        return
    context.progress(0.05, "removing the slice from the dataset")
    with session_scope() as session:
        erasure = execution.erase_slice(session, attempt, plan)
    for position, model_id in enumerate(plan.model_ids):
        share = 0.8 / max(len(plan.model_ids), 1)

        def progress(fraction: float, step: str, base: float = 0.1 + position * share) -> None:
            context.progress(base + share * fraction, step)

        unlearn_model(context, attempt, plan, erasure, model_id, progress)
    context.progress(0.92, "destroying the dataset versions that held the slice")
    with session_scope() as session:
        doomed = execution.destroy_datasets(session, attempt)
    destruction.purge_committed(doomed)
    with session_scope() as session:
        execution.complete(session, attempt)


def unlearn_model(context: JobContext, attempt: JobAttempt, plan: RemediationPlan, erasure: SliceErasure,
                  model_id: uuid.UUID, progress: Any) -> None:
    with session_scope() as session:
        found = execution.snapshot(session, attempt, plan, erasure, model_id)
    if found is None:
        return
    snapshot, forget = found

    def escalate(escalation: Escalation) -> None:
        with session_scope() as session:
            execution.record_escalation(session, attempt, snapshot, escalation)

    ctx = unlearning.context_for(snapshot, (), progress=lambda f, step: progress(0.7 * f, step), forget_records=forget,
                                 forget_sources=forget_sources(plan, snapshot.old_dataset_sha, forget))
    settings = snapshot.method_settings.settings if snapshot.method_settings is not None else None
    result = unlearning.unlearn(ctx, snapshot.method, escalate=escalate, settings=settings)
    # The comparison retrain's artifacts are needed only while the checks run: deleted when this
    # model's step ends, whether it succeeded or not. The same bytes may be the new version's (a
    # SISA shard retrained on the same records under the same seed): kept once the version is
    # recorded; after a failure nothing references them.
    comparison: list[str] = []
    recorded = False
    try:
        context.check()
        progress(0.75, "checking the slice's effect")
        measured = measure(ctx, plan, erasure, snapshot.features, result.shards, result.method, comparison)
        with session_scope() as session:
            doomed = execution.record_model(session, attempt, snapshot, result, measured)
        recorded = True
    finally:
        discard_comparison(plan, comparison,
                           keep=[result.manifest_sha, *artifacts_of(result.shards)] if recorded else [])
    destruction.purge_committed(doomed)


def artifacts_of(shards: Iterable[Shard]) -> list[str]:
    return [sha for shard in shards for sha in (shard.weights, *shard.checkpoints)]


def discard_comparison(plan: RemediationPlan, shas: Iterable[str], keep: Iterable[str]) -> None:
    """Delete the comparison retrain's weights and checkpoints. No row ever referenced them, so
    nothing is audited; a hash that the new version or any live row uses (the same bytes trained
    again: a SISA shard the slice never touched) stays, as `schedule_unreferenced` checks under
    each hash's lock. A failure is logged and leaves the recorded deletions to the sweeper."""
    candidates = sorted(set(shas) - set(keep))
    if not candidates:
        return
    try:
        with session_scope() as session:
            scheduled = unlearning_service.schedule_unreferenced(session, candidates)
        removed = destruction.purge(scheduled)
    except Exception:
        log.exception("remediation %s: the comparison retrain's %d artifacts were not all deleted",
                      plan.remediation_id, len(candidates))
        return
    log.info("remediation %s: deleted %d of the comparison retrain's %d artifacts (the others are in use)",
             plan.remediation_id, removed, len(candidates))


def forget_sources(plan: RemediationPlan, dataset_sha: str, forget: tuple[int, ...]) -> dict[int, str | None] | None:
    """Each slice record's source, where the dataset declares a source column (None otherwise): the
    verdicts then count records sharing a subject or a source as one unit (docs/remediation.md)."""
    if plan.source_column is None:
        return None
    table = read_version_table(get_store(), dataset_sha, ["record_id", plan.source_column])
    wanted = set(forget)
    return {int(i): (None if v is None else str(v))
            for i, v in zip(table.column("record_id").to_pylist(), table.column(plan.source_column).to_pylist(),
                            strict=True) if int(i) in wanted}


def measure(ctx: unlearning.Context, plan: RemediationPlan, erasure: SliceErasure, features: tuple[str, ...],
            shards: tuple[Shard, ...], method: str, comparison: list[str] | None = None) -> dict[str, Any]:
    """The kind's checks on the model before, after, and a retrain without the slice. The
    comparison retrain's artifact hashes are added to `comparison` as soon as they exist, for the
    caller to delete."""
    if plan.kind not in ("poisoning", "bias"):
        return {}
    if plan.kind == "poisoning" and plan.trigger is None:
        return {"attack_success": {"status": "not run", "reason": "the request carries no trigger"}}
    store = get_store()

    def networks(group: tuple[Shard, ...]) -> list[Any]:
        return [load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(s.weights)) for s in group]

    after = networks(shards)
    if method == "retrain":
        retrain = after
    else:
        trained = unlearning.run_method(ctx, "retrain").shards
        if comparison is not None:
            comparison.extend(artifacts_of(trained))
        retrain = networks(trained)
    compared = checks.Networks(before=networks(ctx.old_shards), after=after, retrain=retrain)
    evaluation = checks.evaluation_set(ctx.new_records, ctx.old_manifest.record_ids, ctx.old_manifest.shards,
                                       ctx.forget_ids)
    if plan.kind == "poisoning" and plan.trigger is not None:
        trigger = [(features.index(name), value) for name, value in plan.trigger.features]
        return {"attack_success": dict(checks.attack_success(ctx.family, compared, evaluation, trigger,
                                                             plan.trigger.target))}
    if plan.group_column is None or plan.positive is None:
        return {"group_metrics": {"status": "not run", "reason": "the request names no group column"}}
    table = read_version_table(store, erasure.dataset_sha, ["record_id", plan.group_column])
    values = table.column(plan.group_column).to_pylist()
    groups = {int(i): ("" if v is None else str(v))
              for i, v in zip(np.asarray(table.column("record_id").to_numpy()).tolist(), values, strict=True)}
    return {"group_metrics": dict(checks.group_metrics(ctx.family, compared, evaluation, groups, plan.positive))}
