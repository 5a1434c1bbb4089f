"""From approved requests to unlearning jobs (docs/architecture.md, "The unlearning engine").

The lineage index says which dataset versions and model versions hold a subject. Requests are
coalesced per model into one job per batch window, whose start is never later than the
earliest due date minus a safety margin. A subject found nowhere completes at once, audited.

A request's identifiers are first resolved to every subject key linked to them (app/identities/,
docs/identity-resolution.md); what was searched is stored with the request. A request that
cannot be resolved as it is (too many linked keys, or only kinds nothing holds) waits in
needs_review instead of completing as if the person were nowhere."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.db import utcnow
from app.identities import service as identity_service
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models.models import Model, ModelVersion
from app.requests import outcome as request_outcome
from app.requests import service as request_service
from app.requests.models import ErasureRequest

PLANNER = "worker:planner"


def subject_pairs(request: ErasureRequest) -> list[tuple[str, str]]:
    return [(s.kind, s.subject_key) for s in request.subjects]


def erasure_pairs(session: Session, request: ErasureRequest) -> list[tuple[str, str]]:
    """The (kind, subject key) pairs a job erases for the request: those its planning resolved
    (every linked subject), or its own for a request planned before resolution was stored."""
    return identity_service.resolved_pairs(session, request.id) or subject_pairs(request)


def _checked(session: Session, client: str, dataset_ids: set[uuid.UUID], model_ids: set[uuid.UUID]) -> list[identity_service.Checked]:
    """Every dataset and model of the client that the search looked in (by name and current
    version), and whether it held the person."""
    checked = [
        identity_service.Checked("dataset", str(d.id), d.name, d.current_version, d.id in dataset_ids)
        for d in session.scalars(select(Dataset).where(Dataset.client == client))
    ]
    checked += [
        identity_service.Checked("model", str(m.id), m.name, m.current_version or 0, m.id in model_ids)
        for m in session.scalars(select(Model).where(Model.client == client))
    ]
    return checked


def _needs_review(resolution: identity_service.Resolution) -> bool:
    if resolution.problem == "unresolvable_identifier_kind":
        return get_settings().unresolvable_kind == "review"
    return resolution.problem is not None


def holdings(session: Session, client: str, pairs: list[tuple[str, str]]) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """(dataset ids, model ids) still holding any of the subject's keys, in live (not destroyed)
    dataset versions or in live model versions trained on them."""
    if not pairs:
        return set(), set()
    matches = or_(*[and_(SubjectRecords.subject_key == key, Dataset.subject_kind == kind) for kind, key in pairs])
    versions = session.execute(
        select(DatasetVersion.id, Dataset.id)
        .join(SubjectRecords, SubjectRecords.dataset_version_id == DatasetVersion.id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(matches, Dataset.client == client, DatasetVersion.destroyed_at.is_(None))
    ).all()
    version_ids = {v for v, _ in versions}
    dataset_ids = {d for _, d in versions}
    model_ids: set[uuid.UUID] = set()
    if version_ids:
        model_ids = set(session.scalars(
            select(ModelVersion.model_id).where(ModelVersion.dataset_version_id.in_(version_ids), ModelVersion.destroyed_at.is_(None))
        ))
    return dataset_ids, model_ids


def _start_by(request: ErasureRequest, now: datetime) -> datetime:
    settings = get_settings()
    window_end = now + timedelta(seconds=settings.batch_window_seconds)
    latest = request.due_at - timedelta(hours=settings.deadline_margin_hours)
    return max(now, min(window_end, latest))


def _job_for(session: Session, client: str, model_id: uuid.UUID | None, dataset_id: uuid.UUID | None,
             start_by: datetime, now: datetime) -> Job:
    """The open batch of this model (or model-less dataset), or a new one."""
    # attempt == 0: a job that already ran (now waiting out a backoff) has erased and promoted for
    # its own subjects; a request joining it now would be skipped by those finished steps.
    query = select(Job).where(
        Job.kind == "unlearning", Job.status == "queued", Job.attempt == 0, Job.client == client, Job.not_before > now,
    )
    if model_id is not None:
        query = query.where(Job.model_id == model_id)
    else:
        query = query.where(Job.model_id.is_(None))
    for job in session.scalars(query.with_for_update()):
        if model_id is not None or job.payload.get("dataset_id") == str(dataset_id):
            # A request with an earlier deadline pulls the whole batch forward.
            if job.not_before is None or start_by < job.not_before:
                job.not_before = start_by
            return job
    payload = {"dataset_id": str(dataset_id)} if model_id is None else {}
    return job_service.create(session, client=client, kind="unlearning", model_id=model_id, payload=payload, not_before=start_by)


def plan_request(session: Session, request: ErasureRequest, now: datetime | None = None) -> list[uuid.UUID]:
    now = now or utcnow()
    resolution = identity_service.resolve(session, request.client, subject_pairs(request))
    if _needs_review(resolution):
        identity_service.record_search(session, request.id, resolution, [])
        request_service.move(session, request, "review", PLANNER, reason=resolution.problem, kinds=list(resolution.kinds))
        return []
    dataset_ids, model_ids = holdings(session, request.client, list(resolution.pairs))
    identity_service.record_search(session, request.id, resolution, _checked(session, request.client, dataset_ids, model_ids))
    if not dataset_ids:
        from app.unlearning import completion

        request_outcome.complete(session, request, "no_data_found", PLANNER, datasets=0, models=0)
        completion.certify(session, request)
        return []
    start_by = _start_by(request, now)
    jobs: list[Job] = []
    covered_datasets = set(session.scalars(select(Model.dataset_id).where(Model.id.in_(model_ids)))) if model_ids else set()
    for model_id in sorted(model_ids, key=str):
        jobs.append(_job_for(session, request.client, model_id, None, start_by, now))
    for dataset_id in sorted(dataset_ids - covered_datasets, key=str):
        jobs.append(_job_for(session, request.client, None, dataset_id, start_by, now))
    for job in jobs:
        job_service.link(session, job.id, request.id, now)
    request_service.move(
        session, request, "schedule", PLANNER, jobs=[str(j.id) for j in jobs],
        datasets=len(dataset_ids), models=len(model_ids), start_by=start_by.isoformat(),
    )
    return [j.id for j in jobs]


def plan_approved(session: Session, limit: int = 200) -> int:
    requests = list(session.scalars(
        select(ErasureRequest).where(ErasureRequest.status == "approved")
        .order_by(ErasureRequest.due_at).limit(limit).with_for_update(skip_locked=True)
    ))
    for request in requests:
        plan_request(session, request)
    return len(requests)
