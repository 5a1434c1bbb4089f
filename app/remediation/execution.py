"""The remediation job's rows (docs/remediation.md), for the worker that sequences it
(`workers/remediation.py`): the same machinery as an erasure, with a slice of records as the
forget set. Each function is one step's database work in the caller's unit of work (flush
only), safe to repeat: the request's `result` keeps what earlier steps (and attempts) did.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
from sqlalchemy.orm import Session

from app.certificates import remediation as certificates
from app.datasets import service as dataset_service
from app.datasets import slices
from app.db import utcnow
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import service as model_service
from app.remediation import service as remediation_service
from app.remediation.models import RemediationRequest
from app.remediation.types import RemediationPlan, SliceErasure, Trigger
from app.unlearning import method_choice
from app.unlearning import service as unlearning_service
from app.unlearning.types import Escalation, JobAttempt, ModelSnapshot, VerifiedVersion

WORKER = "worker:remediation"


def _request(session: Session, job_id: uuid.UUID, *, lock: bool = True) -> RemediationRequest:
    job = job_service.get(session, job_id)
    request = session.get(RemediationRequest, uuid.UUID(job.payload["remediation_id"]), with_for_update=lock)
    if request is None:
        raise RuntimeError(f"job {job_id} names no remediation request")
    return request


def _save(session: Session, request: RemediationRequest, **changes: Any) -> None:
    request.result = {**(request.result or {}), **changes}
    request.updated_at = utcnow()
    session.flush()


def start(session: Session, attempt: JobAttempt) -> RemediationPlan | None:
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    request = _request(session, attempt.job_id)
    if request.status == "approved":
        remediation_service.move(session, request, "processing", WORKER, "remediation.processing",
                                 job_id=str(attempt.job_id))
    elif request.status != "processing":
        return None
    dataset = dataset_service.get_dataset(session, request.dataset_id)
    trigger = None
    if request.trigger:
        trigger = Trigger(tuple(sorted(request.trigger["features"].items())),
                          dataset.classes.index(request.trigger["target_label"]))
    positive = None
    if request.group_column is not None:
        label = request.selection.get("positive_label", dataset.classes[-1])
        positive = dataset.classes.index(label)
    return RemediationPlan(
        remediation_id=request.id, job_id=attempt.job_id, kind=request.kind, dataset_id=request.dataset_id,
        model_ids=tuple(uuid.UUID(m) for m in request.model_ids), trigger=trigger,
        group_column=request.group_column, positive=positive, source_column=dataset.source_column,
    )


def erase_slice(session: Session, attempt: JobAttempt, plan: RemediationPlan) -> SliceErasure:
    """A new current dataset version without the slice; the slice kept out of later uploads."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    request = _request(session, attempt.job_id)
    dataset = dataset_service.get_dataset(session, plan.dataset_id)
    done = (request.result or {}).get("dataset")
    if done:
        version = dataset_service.get_version(session, uuid.UUID(done["version_id"]))
        return SliceErasure(version.id, version.sha256, tuple(done["record_ids"]), done["rows_removed"],
                            done["subjects_removed"])
    selection = remediation_service.selection_of(request)
    remediation_service.audit_group_reads(session, request.id, dataset, selection.columns(), WORKER, "execution")
    holding = []
    for version in dataset_service.versions_of(session, dataset):
        if version.destroyed_at is None and selection.mask(remediation_service.read_table(version, selection.columns()),
                                                           dataset).any():
            holding.append(str(version.id))
    parent = dataset_service.current_version(session, dataset)
    table = remediation_service.read_table(parent)
    mask = selection.mask(table, dataset)
    record_ids = [int(i) for i in table.column("record_id").to_numpy()[mask]]
    outcome = dataset_service.erase_records(session, parent, record_ids, attempt.job_id)
    removed = table.filter(pa.array(mask))
    stays_out = selection.predicate if selection.by != "record_ids" and "record_id" not in selection.columns() else None
    dataset_service.add_slice_filter(session, dataset, {
        "remediation_id": str(request.id), "predicate": stays_out,
        "fingerprints": slices.fingerprints(removed, dataset.feature_columns, dataset.classes)})
    entry = {
        "dataset_id": str(dataset.id), "name": dataset.name, "version_before": outcome.parent.version,
        "sha256_before": outcome.sha256_before, "version_after": outcome.version.version,
        "sha256_after": outcome.sha256_after, "rows_removed": outcome.rows_removed,
        "subjects_removed": outcome.subjects_removed, "subjects_matched": len(set(removed.column("subject_key").to_pylist())),
        "version_id": str(outcome.version.id), "record_ids": record_ids, "holding": holding, "destroyed": [],
    }
    remediation_service.audit(session, request, "dataset.remediated", WORKER, {
        k: entry[k] for k in ("name", "version_before", "version_after", "sha256_after", "rows_removed",
                              "subjects_removed")})
    _save(session, request, dataset=entry)
    return SliceErasure(outcome.version.id, outcome.version.sha256, tuple(record_ids), outcome.rows_removed,
                        outcome.subjects_removed)


def snapshot(session: Session, attempt: JobAttempt, plan: RemediationPlan, erasure: SliceErasure,
             model_id: uuid.UUID) -> tuple[ModelSnapshot, tuple[int, ...]] | None:
    """The model's current version as the method's inputs, and the slice's record ids in the
    dataset version it was trained on; None when an earlier attempt already promoted it."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    model = model_service.get_model(session, model_id)
    if model_service.promoted_by(session, model.id, attempt.job_id) or model.current_version is None:
        return None
    old = model_service.current_version(session, model)
    old_dataset = dataset_service.get_version(session, old.dataset_version_id)
    choice = method_choice.choose(session, model, method_choice.choose_method(model, old_dataset.rows))
    request = _request(session, attempt.job_id, lock=False)
    dataset = dataset_service.get_dataset(session, plan.dataset_id)
    selection = remediation_service.selection_of(request)
    if selection.by == "record_ids":
        forget = erasure.record_ids
    else:
        table = remediation_service.read_table(old_dataset, selection.columns())
        forget = tuple(int(i) for i in table.column("record_id").to_numpy()[selection.mask(table, dataset)])
    new_dataset = dataset_service.get_version(session, erasure.version_id)
    return unlearning_service.version_snapshot(session, model, new_dataset, choice, holds=bool(forget)), forget


def record_escalation(session: Session, attempt: JobAttempt, snapshot: ModelSnapshot, escalation: Escalation) -> None:
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    request = _request(session, attempt.job_id)
    remediation_service.audit(session, request, "unlearning.escalated", WORKER,
                              {"model": snapshot.model, **escalation.to_json()})


def record_model(session: Session, attempt: JobAttempt, snapshot: ModelSnapshot, result: VerifiedVersion,
                 checks: dict[str, Any]) -> list[str]:
    """Promote the new version, destroy the model's versions trained on data holding the slice
    (their weights answer 410), audit. Answers the hashes whose bytes must go after commit."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    request = _request(session, attempt.job_id)
    escalations = [e.to_json() for e in result.escalations]
    version = model_service.record_version(
        session, model_id=snapshot.model_id, dataset_version_id=snapshot.new_dataset_version_id, family=snapshot.family,
        params=dict(snapshot.params), seed=snapshot.seed, shape=snapshot.shape.to_json(),
        sisa=snapshot.sisa.to_json() if snapshot.sisa else None, manifest_sha=result.manifest_sha,
        shards=[s.to_json() for s in result.shards], metrics={"verification": result.verification.to_json()},
        origin={"kind": "remediation", "job_id": str(attempt.job_id), "remediation_id": str(request.id),
                "method": result.method, "requested_method": result.requested_method, "escalations": escalations},
        state=dict(result.state), actor=WORKER,
    )
    holding = [uuid.UUID(v) for v in (request.result or {}).get("dataset", {}).get("holding", [])]
    model = model_service.get_model(session, snapshot.model_id)
    doomed = model_service.superseded_versions(session, model, holding)
    removed = unlearning_service.schedule_unreferenced(session, model_service.mark_versions_destroyed(session, doomed))
    verdict = (result.verification.verdicts or {}).get("verdict")
    entry = {
        "model": snapshot.model, "model_id": str(snapshot.model_id), "version_before": snapshot.version_before,
        "sha256_before": snapshot.sha256_before, "version_after": version.version, "sha256_after": version.sha256,
        "method": result.method, "requested_method": result.requested_method, "escalations": escalations,
        "verdict": verdict, "details": dict(result.details),
        "destroyed": [{"version": v.version, "sha256": v.sha256} for v in doomed],
        "checks": checks,
    }
    remediation_service.audit(session, request, "model.remediated", WORKER, {
        "model": snapshot.model, "version_before": snapshot.version_before, "version_after": version.version,
        "method": result.method, "escalated": bool(result.escalations),
        "destroyed_versions": [v.version for v in doomed]})
    models = [m for m in (request.result or {}).get("models", []) if m["model_id"] != entry["model_id"]]
    _save(session, request, models=[*models, entry])
    return removed


def destroy_datasets(session: Session, attempt: JobAttempt) -> list[str]:
    """Mark destroyed the dataset versions that held the slice and no live model version needs."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    request = _request(session, attempt.job_id)
    entry = dict((request.result or {}).get("dataset") or {})
    holding = {uuid.UUID(v) for v in entry.get("holding", [])}
    in_use = model_service.dataset_versions_in_use(session, holding)
    destroyed, shas = dataset_service.destroy_versions(session, holding, [], in_use=in_use)
    removed = unlearning_service.schedule_unreferenced(session, shas)
    if destroyed:
        remediation_service.audit(session, request, "artifacts.destroyed", WORKER, {"dataset_versions": destroyed})
        entry["destroyed"] = [*entry.get("destroyed", []), *destroyed]
        _save(session, request, dataset=entry)
    return removed


def complete(session: Session, attempt: JobAttempt) -> None:
    """Certify and complete the request, then the job."""
    request = _request(session, attempt.job_id)
    result = request.result or {}
    if request.status == "processing":
        dataset = result.get("dataset") or {}
        counts = {"records": int(dataset.get("rows_removed", 0)), "subjects": int(dataset.get("subjects_matched", 0)),
                  "subjects_removed": int(dataset.get("subjects_removed", 0)),
                  "dataset_rows": int(request.dry_run.get("rows", 0))}
        now = utcnow()
        models = [{k: m[k] for k in ("model", "version_before", "sha256_before", "version_after", "sha256_after",
                                     "method", "requested_method", "escalations", "verdict", "destroyed")}
                  for m in result.get("models", [])]
        facts = certificates.RemediationFacts(
            remediation_id=request.id, client=request.client, kind=request.kind, reason=request.reason,
            selection=request.selection["by"], predicate=request.predicate, created_at=request.created_at,
            completed_at=now, created_by=request.created_by, approved_by=request.approved_by or "",
            counts=counts,
            datasets=[{k: dataset[k] for k in ("name", "version_before", "sha256_before", "version_after",
                                                "sha256_after", "rows_removed", "subjects_removed", "destroyed")
                       if k in dataset}] if dataset else [],
            models=models, checks={m["model"]: m["checks"] for m in result.get("models", [])},
        )
        remediation_service.move(session, request, "completed", WORKER, "remediation.completed", **counts)
        certificates.issue(session, facts, WORKER)
    job_service.complete(session, attempt.job_id, attempt.attempt,
                         {"remediation_id": str(request.id), "status": request.status})


def fail_request(session: Session, job: Job, reason: str) -> None:
    """The job failed for good (workers/jobs.py): so does its remediation request."""
    request = session.get(RemediationRequest, uuid.UUID(job.payload["remediation_id"]), with_for_update=True)
    if request is not None and request.status in ("approved", "processing"):
        remediation_service.move(session, request, "failed", WORKER, "remediation.failed", reason=reason[:500])

