"""Verifying the whole audit log in the background: the page starts a run and polls its row.

A run is an `audit_verify` job (workers/audit_verify.py), so it has what every job has
(docs/architecture.md, "The row is the job"): a worker claims it under a lease and renews it, a
worker that dies lets the lease expire, and the sweeper gives the job to another worker or, out
of attempts, fails it, which fails the run (`fail_run`). A run therefore never stays 'running'
after its process died, as it did when it was a thread of the API process. Verifying only reads,
so a second attempt simply starts over.

The reading transaction is read-only (no SQLite write lock), so progress is written every
PROGRESS_EVERY chains in a short transaction of its own, and the lease's heartbeat goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.audit.models import AuditHead
from app.dashboard.models import AuditVerification
from app.db import read_session, session_scope, utcnow
from app.jobs import service as job_service
from app.jobs.models import Job
from app.keys.service import Principal

KIND = "audit_verify"
PROGRESS_EVERY = 500
MAX_BROKEN_LISTED = 100


def start(session: Session, principal: Principal) -> AuditVerification:
    """A new run's row and its job, which a worker picks up once the caller's transaction commits."""
    total = session.scalar(select(func.count()).select_from(AuditHead)) or 0
    run = AuditVerification(
        id=uuid.uuid4(), status="running", started_by=principal.actor, chains_total=total, chains_done=0,
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    job_service.create(session, client=principal.client, kind=KIND, model_id=None, payload={"run_id": str(run.id)})
    return run


def _run_id(job: Job) -> uuid.UUID:
    return uuid.UUID(job.payload["run_id"])


def _progress(run_id: uuid.UUID, **values: Any) -> None:
    with session_scope() as session:
        run = session.get(AuditVerification, run_id)
        for name, value in values.items():
            setattr(run, name, value)


def verify(job_id: uuid.UUID, attempt: int, report: Callable[[float, str], None]) -> None:
    """Attempt `attempt` of the job: read every chain, then record the verdict together with the
    job's completion, fenced by the attempt (a worker that lost its lease records nothing)."""
    with session_scope() as session:
        run_id = _run_id(job_service.get(session, job_id))
        total = session.get(AuditVerification, run_id).chains_total
    _progress(run_id, chains_done=0)
    chains = events = 0
    broken: list[dict[str, Any]] = []
    reading = read_session()
    try:
        for stream, result in audit_service.verify_all(reading):
            chains += 1
            events += result.length
            if not result.valid:
                broken.append({"stream": stream, "seq": result.broken_at_seq, "problem": result.problem})
            if chains % PROGRESS_EVERY == 0:
                report(chains / max(total, chains), "verifying chains")  # raises LeaseLost once the lease is gone
                _progress(run_id, chains_done=chains)
    finally:
        reading.close()
    result = {"valid": not broken, "chains": chains, "events": events, "broken_count": len(broken),
              "broken": broken[:MAX_BROKEN_LISTED]}
    with session_scope() as session:
        job_service.complete(session, job_id, attempt, result)
        run = session.get(AuditVerification, run_id)
        run.status, run.chains_done, run.finished_at, run.result = "completed", chains, utcnow(), result


def fail_run(session: Session, job: Job, reason: str) -> None:
    """The job failed for good (an error, or its workers died `job_max_attempts` times): so did the run."""
    run = session.get(AuditVerification, _run_id(job))
    if run is not None:
        run.status, run.finished_at = "failed", utcnow()
        run.result = {"error": "verification stopped: its worker failed or died; see the job's error and the worker log",
                      "job_id": str(job.id)}


def get(session: Session, run_id: uuid.UUID) -> AuditVerification | None:
    return session.get(AuditVerification, run_id)


def recent(session: Session, limit: int = 10) -> list[AuditVerification]:
    return list(session.scalars(select(AuditVerification).order_by(AuditVerification.started_at.desc()).limit(limit)))
