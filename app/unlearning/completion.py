"""Finishing requests: complete when every job serving them has finished, then sign the
certificate of erasure; or fail them with the job's reason."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import checkpoints
from app.audit import service as audit_service
from app.audit.chain import format_time
from app.audit.models import AuditHead
from app.certificates import signing
from app.certificates.models import Certificate
from app.db import utcnow
from app.jobs.models import Job
from app.requests import service as request_service
from app.requests.lifecycle import TERMINAL
from app.requests.models import ErasureRequest
from app.unlearning.models import JobRequest

WORKER = "worker:unlearning"


def jobs_of(session: Session, request_id: uuid.UUID) -> list[Job]:
    return list(session.scalars(
        select(Job).join(JobRequest, JobRequest.job_id == Job.id).where(JobRequest.request_id == request_id).order_by(Job.created_at)
    ))


def requests_of(session: Session, job_id: uuid.UUID, *, lock: bool = False) -> list[ErasureRequest]:
    query = select(ErasureRequest).join(JobRequest, JobRequest.request_id == ErasureRequest.id).where(JobRequest.job_id == job_id)
    if lock:
        query = query.with_for_update()
    return list(session.scalars(query.order_by(ErasureRequest.received_at)))


def build_certificate(session: Session, request: ErasureRequest) -> dict[str, Any]:
    datasets, models = [], []
    for job in jobs_of(session, request.id):
        result = job.result or {}
        if result.get("dataset"):
            datasets.append({**result["dataset"], "job_id": str(job.id)})
        if result.get("model"):
            models.append({**result["model"], "job_id": str(job.id)})
    stream = audit_service.request_stream(request.id)
    head = session.get(AuditHead, stream)
    return {
        "type": "obliviate.certificate-of-erasure/v1",
        "format_version": signing.FORMAT_VERSION,
        "request_id": str(request.id),
        "jurisdiction": request.jurisdiction,
        "source": request.source,
        "external_id": request.external_id,
        "received_at": format_time(request.received_at),
        "due_at": format_time(request.due_at),
        "completed_at": format_time(request.completed_at or utcnow()),
        "outcome": request.outcome,
        # A digest of the subject keys: proves which pseudonym was erased without revealing it.
        "subject_key_digest": request.subject_digest,
        "datasets": datasets,
        "models": models,
        # The link before this certificate's own `certificate.issued` event, which cannot be
        # named here (it records this document's digest): `audit verify --head` accepts it.
        "audit_chain": {"stream": stream, "seq": head.seq if head else 0, "head": head.hash if head else None},
        "issued_at": format_time(utcnow()),
    }


def issue_certificate(session: Session, request: ErasureRequest) -> Certificate:
    body = build_certificate(session, request)
    document = signing.sign_body(body, session)
    certificate = Certificate(
        request_id=request.id, body=body, signature=document["signature"]["value"],
        key_id=document["signature"]["key_id"], public_key=document["signature"]["public_key"], issued_at=utcnow(),
    )
    session.add(certificate)
    audit_service.append(
        session, audit_service.request_stream(request.id), "certificate.issued", WORKER,
        {"sha256": hashlib.sha256(signing.document_bytes(document)).hexdigest(), "key_id": certificate.key_id},
    )
    session.flush()
    # Anchor the certificate: a checkpoint over its event, signed right after this commit.
    checkpoints.anchor_after_commit(session)
    return certificate


def signed_document(certificate: Certificate) -> dict[str, Any]:
    return {
        "certificate": certificate.body,
        "signature": {
            "algorithm": signing.ALGORITHM, "key_id": certificate.key_id, "public_key": certificate.public_key,
            "value": certificate.signature,
        },
    }


def complete_finished(session: Session, job: Job) -> list[ErasureRequest]:
    """Complete every request of `job` whose jobs have all completed."""
    done = []
    for request in requests_of(session, job.id, lock=True):
        if request.status in TERMINAL or request.status == "on_hold":
            continue
        if all(j.status == "completed" for j in jobs_of(session, request.id)):
            request.outcome = "erased"
            request_service.move(session, request, "complete", WORKER, outcome="erased")
            issue_certificate(session, request)
            done.append(request)
    return done


def fail_requests(session: Session, job: Job, reason: str) -> None:
    for request in requests_of(session, job.id, lock=True):
        if request.status not in TERMINAL:
            request.outcome = "failed"
            request_service.move(session, request, "fail", WORKER, reason=reason[:500], job_id=str(job.id))
