"""Finishing requests: complete those whose jobs have all finished and certify them from the
jobs' ledgers; or fail them with the job's reason. The requests' owner sets their outcome
(app/requests/outcome.py); the certificates' owner builds and signs the certificate
(app/certificates/service.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from app.certificates import service as certificate_service
from app.certificates.models import Certificate
from app.certificates.service import Checked, Entry, ErasureFacts, ModelErasure, Scope
from app.datasets import service as dataset_service
from app.identities import service as identity_service
from app.identities.service import Checked as CheckedItem
from app.identities.service import Searched
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import service as model_service
from app.requests import outcome as request_outcome
from app.requests.lifecycle import TERMINAL
from app.requests.models import ErasureRequest
from app.unlearning.ledger import JobLedger
from app.unlearning.types import EXACT

WORKER = "worker:unlearning"
# The job ledger's key for the checks run on the weights before unlearning.
NO_OP_CONTROL = "no_op_control"


def _model_erasure(model: Entry, dataset: Entry | None, result: Mapping[str, Any] | None) -> ModelErasure:
    method = model.get("method")
    control = (result or {}).get(NO_OP_CONTROL)
    return ModelErasure(
        entry=model, method_kind="exact" if method is None or method in EXACT else "approximate",
        dataset=dataset, no_op_control=control if isinstance(control, Mapping) else None,
    )


def _scope(session: Session, request: ErasureRequest, datasets: list[Entry], models: list[ModelErasure]) -> Scope:
    """What planning searched (app/identities/, `searched_for`): the kinds, and every dataset and
    model of the client at the version searched (the one a job started from where it held the
    person). A request planned before searches were recorded: the client's current ones."""
    searched = identity_service.searched_for(session, request.id)
    held_datasets = {str(d.get("dataset_id")): d for d in datasets if d.get("rows_removed", 1)}
    held_models = {str(m.entry.get("model_id")): m.entry for m in models if m.entry.get("version_after") is not None}
    if searched is not None:
        return _searched_scope(searched, held_datasets, held_models)
    checked_datasets = tuple(
        Checked(d.name, int(held_datasets[str(d.id)]["version_before"]), True) if str(d.id) in held_datasets
        else Checked(d.name, d.current_version, False) for d in dataset_service.of_client(session, request.client))
    checked_models = tuple(
        Checked(m.name, int(held_models[str(m.id)]["version_before"]), True) if str(m.id) in held_models
        else Checked(m.name, m.current_version, False) for m in model_service.of_client(session, request.client))
    return Scope(tuple(sorted(s.kind for s in request.subjects)), checked_datasets, checked_models)


def _searched_scope(searched: Searched, held_datasets: Mapping[str, Entry], held_models: Mapping[str, Entry]) -> Scope:
    def checked(item: CheckedItem, held: Mapping[str, Entry]) -> Checked:
        entry = held.get(item.id)
        version = entry.get("version_before") if entry is not None else None
        return Checked(item.name, int(version) if version is not None else item.version, item.held)

    return Scope(
        searched.kinds,
        tuple(checked(c, held_datasets) for c in searched.checked if c.type == "dataset"),
        tuple(checked(c, held_models) for c in searched.checked if c.type == "model"),
        resolved_kinds=searched.resolved_kinds, keys_searched=searched.subjects,
    )


def certify(session: Session, request: ErasureRequest) -> Certificate:
    """Issue the completed request's certificate, listing what each of its jobs erased."""
    datasets: list[Entry] = []
    models: list[ModelErasure] = []
    for job in job_service.jobs_of(session, request.id):
        dataset, model = JobLedger.from_json(job.result).certified(job.id)
        if dataset is not None:
            datasets.append(dataset)
        if model is not None:
            models.append(_model_erasure(model, dataset, job.result))
    facts = ErasureFacts(
        request_id=request.id, client=request.client, jurisdiction=request.jurisdiction, source=request.source,
        external_id=request.external_id, received_at=request.received_at, due_at=request.due_at,
        completed_at=request.completed_at, outcome=request.outcome,
        subject_keys={s.kind: s.subject_key for s in request.subjects},
        scope=_scope(session, request, datasets, models), datasets=tuple(datasets), models=tuple(models),
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
