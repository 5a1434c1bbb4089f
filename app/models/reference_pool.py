"""Reference models of a model (the per-record membership audit's pool): recording new ones,
listing the live ones, destroying those that held an erased subject, scheduling their refill.

Their bytes are artifacts like any weights: recorded under `app.artifacts.service.adopt`, and
deleted only through `schedule_unreferenced` once nothing live refers to them. Functions here
only flush."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.config import get_settings
from app.db import utcnow
from app.jobs import service as job_service
from app.jobs.models import Job
from app.lineage import reference_halves
from app.models import service as model_service
from app.models.models import Model, ModelReference

KIND = "references"


def live(session: Session, model_id) -> list[ModelReference]:
    return list(session.scalars(select(ModelReference).where(
        ModelReference.model_id == model_id, ModelReference.destroyed_at.is_(None)).order_by(ModelReference.position)))


def record(session: Session, *, model_id, position: int, pool_size: int, membership_seed: int, dataset_version_id,
           weights_sha: str) -> ModelReference:
    artifact_service.adopt(session, [weights_sha])
    generation = session.scalar(select(func.max(ModelReference.generation)).where(
        ModelReference.model_id == model_id, ModelReference.position == position))
    reference = ModelReference(
        model_id=model_id, position=position, pool_size=pool_size, membership_seed=membership_seed,
        generation=0 if generation is None else generation + 1, dataset_version_id=dataset_version_id,
        weights_sha256=weights_sha, created_at=utcnow(),
    )
    session.add(reference)
    session.flush()
    return reference


def record_trained(session: Session, *, model_id, pool_size: int, membership_seed: int, dataset_version_id,
                   trained: Mapping[int, str]) -> None:
    """Record freshly trained positions (position → stored weights hash) of the pool."""
    for position, sha in sorted(trained.items()):
        record(session, model_id=model_id, position=position, pool_size=pool_size, membership_seed=membership_seed,
               dataset_version_id=dataset_version_id, weights_sha=sha)


def missing_positions(session: Session, model_id, pool_size: int) -> list[int]:
    have = {r.position for r in live(session, model_id) if r.pool_size == pool_size}
    return [p for p in range(pool_size) if p not in have]


def destroy(session: Session, references: list[ModelReference]) -> set[str]:
    """Mark references destroyed; answers their weight hashes, candidates for deletion."""
    now = utcnow()
    for reference in references:
        reference.destroyed_at = now
    session.flush()
    return {r.weights_sha256 for r in references}


def schedule_refill(session: Session, model: Model) -> Job | None:
    """A low-priority job that trains the missing references on the model's current data: it
    waits `reference_refill_delay_seconds`, so the erasures of the same window go first, and
    one queued refill per model is enough."""
    pending = session.scalar(select(Job.id).where(Job.model_id == model.id, Job.kind == KIND, Job.status.in_(job_service.ACTIVE)))
    if pending is not None or not model_service.within_budget(session, model):
        return None
    delay = get_settings().reference_refill_delay_seconds
    return job_service.create(session, client=model.client, kind=KIND, model_id=model.id, payload={},
                              not_before=utcnow() + timedelta(seconds=delay) if delay > 0 else None)


def destroy_holding(session: Session, model_id, subject_keys: list[str]) -> list[ModelReference]:
    """Mark destroyed every live reference of the model that trained on one of these subjects
    (the subjects the model's training records held); answers them."""
    doomed = [r for r in live(session, model_id)
              if any(reference_halves.holds(r.position, r.membership_seed, key) for key in subject_keys)]
    destroy(session, doomed)
    return doomed
