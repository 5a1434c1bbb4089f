"""How a request ends, set here and nowhere else: its `outcome` and its terminal move, and the
progress the unlearning job shows while it verifies. Flushes only; the caller commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import service as job_service
from app.requests import service
from app.requests.lifecycle import TERMINAL
from app.requests.models import ErasureRequest


def of_job(session: Session, job_id: uuid.UUID, *, lock: bool = False) -> list[ErasureRequest]:
    """The requests a job serves, oldest first; `lock` holds them until the commit, so two jobs
    finishing at once do not both complete (and certify) the same request."""
    query = select(ErasureRequest).where(ErasureRequest.id.in_(job_service.requests_of(job_id)))
    if lock:
        query = query.with_for_update()
    return list(session.scalars(query.order_by(ErasureRequest.received_at)))


def complete(session: Session, request: ErasureRequest, outcome: str, actor: str, **extra: Any) -> None:
    """The request is done: "erased" (every job serving it finished) or "no_data_found"."""
    request.outcome = outcome
    service.move(session, request, "complete", actor, outcome=outcome, **extra)


def fail(session: Session, request: ErasureRequest, actor: str, reason: str, **extra: Any) -> None:
    """A job serving the request failed for good; requests already ended stay as they are."""
    if request.status in TERMINAL:
        return
    request.outcome = "failed"
    service.move(session, request, "fail", actor, reason=reason[:500], **extra)


def verifying(session: Session, request: ErasureRequest, progress: dict[str, Any], actor: str, **extra: Any) -> None:
    """A model serving the request was unlearned and verified: its figures, shown while the
    request waits for the rest of its jobs."""
    request.progress = progress
    service.move(session, request, "verify", actor, **extra)
