"""Finishing requests: complete those whose jobs have all finished and certify them from the
jobs' ledgers; or fail them with the job's reason. The requests' owner sets their outcome
(app/requests/outcome.py); the certificates' owner builds and signs the certificate
(app/certificates/service.py)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.certificates import service as certificate_service
from app.certificates.models import Certificate
from app.certificates.service import Entry, ErasureFacts
from app.jobs import service as job_service
from app.jobs.models import Job
from app.requests import outcome as request_outcome
from app.requests.lifecycle import TERMINAL
from app.requests.models import ErasureRequest
from app.unlearning.ledger import JobLedger

WORKER = "worker:unlearning"


def certify(session: Session, request: ErasureRequest) -> Certificate:
    """Issue the completed request's certificate, listing what each of its jobs erased."""
    datasets: list[Entry] = []
    models: list[Entry] = []
    for job in job_service.jobs_of(session, request.id):
        dataset, model = JobLedger.from_json(job.result).certified(job.id)
        if dataset is not None:
            datasets.append(dataset)
        if model is not None:
            models.append(model)
    facts = ErasureFacts(
        request_id=request.id, jurisdiction=request.jurisdiction, source=request.source,
        external_id=request.external_id, received_at=request.received_at, due_at=request.due_at,
        completed_at=request.completed_at, outcome=request.outcome, subject_key_digest=request.subject_digest,
        datasets=tuple(datasets), models=tuple(models),
    )
    return certificate_service.issue(session, facts, WORKER)


def complete_finished(session: Session, job: Job) -> list[ErasureRequest]:
    """Complete every request of `job` whose jobs have all completed."""
    done = []
    for request in request_outcome.of_job(session, job.id, lock=True):
        if request.status in TERMINAL or request.status == "on_hold":
            continue
        if all(j.status == "completed" for j in job_service.jobs_of(session, request.id)):
            request_outcome.complete(session, request, "erased", WORKER)
            certify(session, request)
            done.append(request)
    return done


def fail_requests(session: Session, job: Job, reason: str) -> None:
    """The job failed for good (workers/jobs.py): so do the requests it serves."""
    for request in request_outcome.of_job(session, job.id, lock=True):
        request_outcome.fail(session, request, WORKER, reason, job_id=str(job.id))
