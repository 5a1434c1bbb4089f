"""Unlearning jobs (docs/architecture.md, "The unlearning engine"): erase the subjects from the data, produce and verify a
new model version, promote it, destroy what still holds them, complete the requests.

This module only sequences the steps: each step's rows are `app.unlearning.service`'s, in a unit
of work of its own; the maths are `workers.engine.unlearning.job`'s. Each step is safe to
repeat: a job that dies half-way is claimed again and finds what its earlier attempt already
committed (the erased dataset version, the promoted model version), keeping all partial results
in the job's ledger (`app/unlearning/ledger.py`), which only the owning attempt may write."""

from __future__ import annotations

from app.db import session_scope
from app.unlearning import service
from app.unlearning.types import DatasetErasure, Escalation, JobAttempt, UnlearningPlan
from workers import destruction
from workers.engine.unlearning import job as unlearning
from workers.jobs import JobContext
from workers.training import begin


def run(context: JobContext) -> None:
    attempt = begin(context)
    with session_scope() as session:
        plan = service.start(session, attempt)
    if plan is None:
        with session_scope() as session:
            service.complete_without_requests(session, attempt)
        return
    context.progress(0.05, "erasing dataset rows")
    with session_scope() as session:
        erasure = service.erase_dataset(session, attempt, plan)
    if plan.model_id is not None:
        unlearn_model(context, attempt, plan, erasure)
    context.progress(0.9, "destroying superseded artifacts")
    destroy_superseded(attempt, plan, erasure)
    with session_scope() as session:
        service.complete(session, attempt)


def destroy_superseded(attempt: JobAttempt, plan: UnlearningPlan, erasure: DatasetErasure) -> None:
    with session_scope() as session:
        doomed = service.destroy_superseded(session, attempt, plan, erasure)
    destruction.purge_committed(doomed)


def unlearn_model(context: JobContext, attempt: JobAttempt, plan: UnlearningPlan, erasure: DatasetErasure) -> None:
    with session_scope() as session:
        snapshot = service.snapshot_model(session, attempt, plan, erasure)
    if snapshot is None:
        return  # promoted by an earlier attempt of this job
    if not snapshot.holds:
        with session_scope() as session:
            service.record_unchanged(session, attempt, snapshot)
        return

    def escalate(escalation: Escalation) -> None:
        with session_scope() as session:
            service.record_escalation(session, attempt, plan, snapshot, escalation)

    ctx = unlearning.context_for(snapshot, erasure.keys, progress=lambda f, step: context.progress(0.1 + 0.7 * f, step),
                                 requests=plan.request_keys(erasure.keys))
    settings = snapshot.method_settings.settings if snapshot.method_settings is not None else None
    result = unlearning.unlearn(ctx, snapshot.method, escalate=escalate, settings=settings,
                                verifying=lambda: context.progress(0.82, "verifying"))
    context.check()
    with session_scope() as session:
        service.record_unlearned(session, attempt, plan, snapshot, result)
