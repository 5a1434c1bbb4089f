"""Erasure requests that re-apply, after a database restore, an erasure the restored database
no longer holds (app/restore/). Each names its original in `external_id`, so a second
restore-check finds it instead of making another."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.db import utcnow
from app.pseudonym import subject_digest
from app.requests.models import ErasureRequest, RequestSubject
from app.requests.service import move

PREFIX = "restore:"


def external_id_of(original_id: uuid.UUID) -> str:
    return f"{PREFIX}{original_id}"


def find(session: Session, client: str, original_id: uuid.UUID) -> ErasureRequest | None:
    return session.scalar(select(ErasureRequest).where(
        ErasureRequest.client == client, ErasureRequest.external_id == external_id_of(original_id)))


def create_approved(session: Session, client: str, jurisdiction: str, subjects: tuple[tuple[str, str], ...],
                    original_id: uuid.UUID, actor: str) -> ErasureRequest:
    """An approved request for the subject keys of `original_id` (already pseudonymised: the
    erasure log holds no raw identifier), due at once: the erasure was due before the restore."""
    now = utcnow()
    keys = dict(subjects)
    request = ErasureRequest(
        id=uuid.uuid4(), client=client, external_id=external_id_of(original_id), jurisdiction=jurisdiction,
        source="admin", status="received", held_from=None, identity_verified=True,
        verification_status="verified", verification_method="other", verification_at=now,
        reason=f"re-applies erasure request {original_id} after a database restore", status_reason=None,
        callback_url=None, subject_digest=subject_digest(keys), received_at=now, due_at=now, updated_at=now,
        subjects=[RequestSubject(kind=kind, subject_key=key) for kind, key in keys.items()],
    )
    session.add(request)
    session.flush()
    audit_service.append(session, audit_service.request_stream(request.id), "request.received", actor, {
        "jurisdiction": jurisdiction, "source": "admin", "external_id": request.external_id,
        "identity_verified": True, "identifier_kinds": sorted(keys), "subject_digest": request.subject_digest,
        "due_at": now.isoformat(), "status": "received", "reapplies": str(original_id),
    })
    move(session, request, "approve", actor, reapplies=str(original_id))
    return request
