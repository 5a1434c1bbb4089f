"""Job rows: creation, claiming with a lease, fenced updates, and the sweeper's queries.

A worker's claim is one conditional UPDATE that bumps `attempt`; every later write of that worker
carries `WHERE attempt = :mine`, so a worker that lost its lease (it was presumed dead and the job
was claimed again) cannot change anything any more. See getsentry's deletions/tasks/scheduled.py
for the same idea applied to scheduled deletions.
"""

from __future__ import annotations

import copy
import importlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, or_, select, update
from sqlalchemy.orm import Session

from app import metrics, queue
from app.config import get_settings
from app.db import on_commit, utcnow
from app.errors import NotFound
from app.jobs.models import Job, JobRequest
from app.keys.service import Principal
from app.pagination import newest_first_page
from app.visibility import visible_one

ACTIVE = ("queued", "running")

# kind → "module:function(session, job, reason)", called when a job fails for good. Named, not
# imported: the modules that handle a kind's failure build on this one.
ON_FAILED = {"unlearning": "app.unlearning.completion:fail_requests", "audit_verify": "app.dashboard.verification:fail_run",
             "remediation": "app.remediation.execution:fail_request"}


class LeaseLost(RuntimeError):
    """This worker's attempt is no longer the job's current attempt; its results are void."""


def create(session: Session, *, client: str, kind: str, model_id, payload: dict[str, Any], not_before=None) -> Job:
    job = Job(
        id=uuid.uuid4(), client=client, kind=kind, status="queued", model_id=model_id, payload=payload,
        attempt=0, max_attempts=get_settings().job_max_attempts, created_at=utcnow(),
        progress={"fraction": 0.0, "step": "queued"}, not_before=not_before,
    )
    session.add(job)
    session.flush()
    if not_before is None:
        enqueue_after_commit(session, job)
    return job


def enqueue_after_commit(session: Session, job: Job) -> None:
    job_id = job.id
    job.enqueued_at = utcnow()
    on_commit(session, lambda: send(job_id))


def send(job_id) -> None:
    queue.send_job(job_id)


def get_for(session: Session, principal: Principal, job_id: uuid.UUID) -> Job:
    return visible_one(session, principal, select(Job).where(Job.id == job_id), Job.client, "No job with this id.")


def list_for(session: Session, principal: Principal, *, kind: str | None, status: str | None,
             model_id: uuid.UUID | None, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    """The client's own jobs, newest first; an admin key sees its own client's, like any key."""
    query = select(Job).where(Job.client == principal.client)
    for column, value in ((Job.kind, kind), (Job.status, status), (Job.model_id, model_id)):
        if value is not None:
            query = query.where(column == value)
    return newest_first_page(session, query, Job.created_at, Job.id, limit, cursor)


def get(session: Session, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("No job with this id.")
    return job


def model_of(job: Job) -> uuid.UUID:
    """The model a model job (training, references, rehearsal) works on."""
    if job.model_id is None:
        raise ValueError(f"job {job.id} ({job.kind}) names no model")
    return job.model_id


def result_of(session: Session, job_id: uuid.UUID) -> dict[str, Any]:
    """A copy of the job's result as committed (never the session's cached row, which a fenced
    update does not refresh), for a step to extend and save with `fenced(..., result=...)`."""
    result = session.scalar(select(Job.result).where(Job.id == job_id))
    return copy.deepcopy(dict(result or {}))


def jobs_of(session: Session, request_id: uuid.UUID) -> list[Job]:
    """The jobs an erasure request waits on, oldest first."""
    return list(session.scalars(
        select(Job).join(JobRequest, JobRequest.job_id == Job.id).where(JobRequest.request_id == request_id).order_by(Job.created_at)
    ))


def requests_of(job_id: uuid.UUID) -> Select[uuid.UUID]:
    """The ids of the requests a job serves, as a subquery for the requests' owner to load
    (app/requests/outcome.py): the jobs package never reads the requests table."""
    return select(JobRequest.request_id).where(JobRequest.job_id == job_id)


def link(session: Session, job_id: uuid.UUID, request_id: uuid.UUID, added_at: datetime) -> None:
    """The job serves the request (once, however often the planner sees them together)."""
    if session.get(JobRequest, (job_id, request_id)) is None:
        session.add(JobRequest(job_id=job_id, request_id=request_id, added_at=added_at))


def unlink(session: Session, job_id: uuid.UUID, request_id: uuid.UUID) -> None:
    """The job no longer serves the request (held, cancelled or denied before it ran)."""
    found = session.get(JobRequest, (job_id, request_id))
    if found is not None:
        session.delete(found)


def claim(session: Session, job_id, lease_seconds: float) -> int | None:
    """Take the job for this worker; returns the new attempt number, or None if it is not
    claimable (done, failed, held by a live lease, waiting for its backoff, or gone)."""
    now = utcnow()
    # Taking over an expired lease counts a lost lease, as the sweeper's `expire` does; the last
    # one allowed is left to the sweeper, which fails the job.
    lost = Job.status == "running"
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.status == "queued", and_(lost, Job.lease_until < now,
                                             Job.lost_leases + 1 < get_settings().job_max_lost_leases)),
            or_(Job.not_before.is_(None), Job.not_before <= now),
            Job.attempt < Job.max_attempts,
        )
        .values(status="running", attempt=Job.attempt + 1, lease_until=now + timedelta(seconds=lease_seconds), started_at=now,
                lost_leases=Job.lost_leases + case((lost, 1), else_=0))
        .returning(Job.attempt)
    ).first()
    return None if row is None else row[0]


def fenced(session: Session, job_id, attempt: int, **values: Any) -> None:
    """Update the job only if `attempt` still owns it; otherwise raise LeaseLost."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.status == "running").values(**values)
    )
    if result.rowcount != 1:
        raise LeaseLost(f"job {job_id} attempt {attempt} no longer holds the lease")


def renew(session: Session, job_id, attempt: int, lease_seconds: float, progress: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"lease_until": utcnow() + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    fenced(session, job_id, attempt, **values)


def complete(session: Session, job_id, attempt: int, result: dict[str, Any]) -> None:
    fenced(
        session, job_id, attempt, status="completed", result=result, lease_until=None, finished_at=utcnow(),
        progress={"fraction": 1.0, "step": "completed"}, error=None,
    )


def fail(session: Session, job_id, attempt: int, error: str) -> None:
    fenced(session, job_id, attempt, status="failed", error=error[:2000], lease_until=None, finished_at=utcnow())


def kind_of(session: Session, job_id: uuid.UUID) -> str:
    return get(session, job_id).kind


def fail_for_good(session: Session, job_id: uuid.UUID, attempt: int, reason: str) -> None:
    """The attempt failed and the job will not run again: fail it and let its kind react."""
    fail(session, job_id, attempt, reason)
    _on_failed(session, get(session, job_id), reason)


def give_back(session: Session, job_id: uuid.UUID, attempt: int, error: str, delay_seconds: float) -> bool:
    """A transient error: re-queue the job after `delay_seconds`. False, and nothing written, when
    the attempt was its last (the caller then fails it, in a unit of work of its own)."""
    job = session.get(Job, job_id)
    if job is not None and attempt >= job.max_attempts:
        return False
    retry_later(session, job_id, attempt, error, delay_seconds)
    return True


def _on_failed(session: Session, job: Job, reason: str) -> None:
    metrics.JOBS_FAILED.labels(kind=job.kind).inc()
    hook = ON_FAILED.get(job.kind)
    if hook:
        module, _, attr = hook.partition(":")
        getattr(importlib.import_module(module), attr)(session, job, reason)


def retry_later(session: Session, job_id, attempt: int, error: str, delay_seconds: float) -> None:
    """A transient error: give the job back with a backoff; the sweeper or a countdown re-sends it."""
    fenced(
        session, job_id, attempt, status="queued", error=error[:2000], lease_until=None,
        not_before=utcnow() + timedelta(seconds=delay_seconds), enqueued_at=None,
    )


def expired(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == "running", Job.lease_until < utcnow()).with_for_update(skip_locked=True)))


OUT_OF_MEMORY = "worker died, likely out of memory"


def expire(session: Session, job: Job) -> bool:
    """The job's lease expired: its worker died without giving it back. Re-queue it, unless it
    is out of attempts or its workers died `job_max_lost_leases` times: a job that kills its
    process (for memory, most often) would kill every worker it is retried on. Answers whether
    the job failed for good (the caller runs the failure hooks)."""
    job.lost_leases = (job.lost_leases or 0) + 1
    job.lease_until = None
    if job.lost_leases >= get_settings().job_max_lost_leases:
        job.error = f"{OUT_OF_MEMORY}: its worker stopped without a heartbeat {job.lost_leases} times"
    elif job.attempt >= job.max_attempts:
        job.error = f"worker lost {job.attempt} times (lease expired)"
    else:
        job.status = "queued"
        enqueue_after_commit(session, job)
        return False
    job.status, job.finished_at = "failed", utcnow()
    return True


def stranded(session: Session, resend_after_seconds: float) -> list[Job]:
    """Queued jobs whose message may have been lost: never sent, or sent long ago."""
    now = utcnow()
    return list(session.scalars(
        select(Job).where(
            Job.status == "queued",
            or_(Job.not_before.is_(None), Job.not_before <= now),
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - timedelta(seconds=resend_after_seconds)),
        ).with_for_update(skip_locked=True)
    ))


def sweep(session: Session, resend_after_seconds: float) -> int:
    """Re-queue jobs whose worker died (expired lease), fail those out of attempts, re-send the
    messages of queued jobs that may have been lost; answers how many jobs it touched."""
    touched = 0
    for job in expired(session):
        touched += 1
        if expire(session, job):
            _on_failed(session, job, job.error)
    for job in stranded(session, resend_after_seconds):
        touched += 1
        enqueue_after_commit(session, job)
    return touched


# Jobs the service queues on its own, at low priority, after a client's training or erasure (the
# reference refill, the unlearning rehearsal), and an admin's audit log verification: they never
# count against the client's job quota.
BACKGROUND_KINDS = ("references", "rehearsal", "audit_verify")


def count_active(session: Session, client: str, kind: str | None = None) -> int:
    """Queued or running jobs of the client: of one kind, or else those the client asked for
    (training, unlearning), not the background ones."""
    from sqlalchemy import func

    query = select(func.count()).select_from(Job).where(Job.client == client, Job.status.in_(ACTIVE))
    if kind:
        query = query.where(Job.kind == kind)
    else:
        query = query.where(Job.kind.not_in(BACKGROUND_KINDS))
    return session.scalar(query) or 0
