"""The unlearning job's rows (docs/architecture.md, "The unlearning engine"), for the worker that sequences it.

Each function is one step's database work, in the caller's unit of work (they only flush), and
orchestrates the domain services that own the tables: dataset versions and tombstones
(`app.datasets.service`), model versions (`app.models.service`), artifact liveness
(`app.artifacts.service`), job rows, their fence and their requests (`app.jobs.service`), the
requests' progress and outcome (`app.requests.outcome`). Steps talk to the worker in the frozen
records of `app.unlearning.types` and keep the job's partial results in its ledger
(`app.unlearning.ledger`, stored as `job.result` and read by `completion.certify`), which is
written here and nowhere else. Every write is fenced by the worker's attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.artifacts.store import ArtifactStore
from app.audit import service as audit_service
from app.datasets import service as dataset_service
from app.datasets.models import DatasetVersion
from app.identities import service as identity_service
from app.families.shape import Shape
from app.jobs import service as job_service
from app.models import reference_pool as reference_service
from app.models import service as model_service
from app.models.models import Model
from app.requests import outcome as request_outcome
from app.requests import service as request_service
from app.unlearning import completion, exclusive, method_choice, planner, sanity
from app.unlearning.ledger import JobLedger
from app.unlearning.types import (
    EXACT,
    DatasetErasure,
    Escalation,
    JobAttempt,
    JsonObject,
    JsonValue,
    MethodSettings,
    ModelSnapshot,
    ReferenceModel,
    Shard,
    Sisa,
    UnlearningPlan,
    VerifiedVersion,
)

WORKER = completion.WORKER
LIVE = ("scheduled", "processing", "verifying")
DETACHED = ("on_hold", "cancelled", "denied")


def _ledger(session: Session, attempt: JobAttempt) -> JobLedger:
    """The job's ledger as committed by its earlier steps (and attempts)."""
    return JobLedger.from_json(job_service.result_of(session, attempt.job_id))


def _save(session: Session, attempt: JobAttempt, ledger: JobLedger) -> None:
    job_service.fenced(session, attempt.job_id, attempt.attempt, result=ledger.to_json())


def _audit_all(session: Session, request_ids: Iterable[uuid.UUID], type_: str, data: dict[str, Any]) -> None:
    for request_id in request_ids:
        audit_service.append(session, audit_service.request_stream(request_id), type_, WORKER, data)


def live_references(session: Session, shas: Sequence[str]) -> set[str]:
    """The hashes a live dataset version or model version of any client still references: the
    liveness every deletion of shared bytes is decided by (issue 9)."""
    return dataset_service.live_references(session, shas) | model_service.live_references(session, shas)


def schedule_unreferenced(session: Session, candidates: Iterable[str]) -> list[str]:
    """Record the deletion of every candidate hash nothing live references (under its lock)."""
    return artifact_service.schedule_unreferenced(session, candidates, live_references)


def finish_deletion(session: Session, sha: str, *, store: ArtifactStore | None = None) -> bool:
    """Carry out one pending deletion if nothing live references the hash; True when bytes went."""
    return artifact_service.finish(session, sha, live_references, store=store)


def start(session: Session, attempt: JobAttempt) -> UnlearningPlan | None:
    """Move the job's live requests to processing; detach held or cancelled ones. None when no
    request is left to serve."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    job = job_service.get(session, attempt.job_id)
    live = []
    for request in request_outcome.of_job(session, job.id, lock=True):
        if request.status in LIVE:
            if request.status == "scheduled":
                request_service.move(session, request, "process", WORKER, job_id=str(job.id))
            live.append(request)
        elif request.status in DETACHED:
            job_service.unlink(session, job.id, request.id)
    own = [tuple(sorted(set(planner.erasure_pairs(session, r)))) for r in live]
    pairs = sorted({pair for found in own for pair in found})
    _save(session, attempt, _ledger(session, attempt).serving(r.id for r in live))
    if not live:
        return None
    return UnlearningPlan(
        job_id=job.id, client=job.client, model_id=job.model_id,
        dataset_id=exclusive.dataset_of(session, job.model_id, job.payload),
        pairs=tuple(pairs), request_ids=tuple(r.id for r in live), request_pairs=tuple(own),
    )


def erase_dataset(session: Session, attempt: JobAttempt, plan: UnlearningPlan) -> DatasetErasure:
    """A new current dataset version without the subjects' rows, and tombstones for them."""
    if plan.dataset_id is None:
        raise RuntimeError(f"job {plan.job_id} names no dataset")
    dataset = dataset_service.get_dataset(session, plan.dataset_id)
    keys = tuple(key for kind, key in plan.pairs if kind == dataset.subject_kind)
    outcome = dataset_service.erase_subjects(
        session, dataset_service.current_version(session, dataset), keys, attempt.job_id)
    dataset_service.add_tombstones(session, dataset.client, list(keys), plan.request_ids[0])
    # Erasing a subject removes its links: its other identifiers no longer lead anywhere.
    identity_service.remove_links(session, dataset.client, [key for _kind, key in plan.pairs])
    fresh = DatasetErasure(
        dataset_id=dataset.id, name=dataset.name, version_before=outcome.parent.version,
        sha256_before=outcome.sha256_before, version_after=outcome.version.version, sha256_after=outcome.sha256_after,
        rows_removed=outcome.rows_removed, subjects_removed=outcome.subjects_removed,
        version_id=outcome.version.id, keys=keys,
    )
    ledger = _ledger(session, attempt)
    previous = ledger.dataset or {}
    # A retry erases from the version the first attempt made (and finds nothing left): the
    # first attempt's entry stands, its `destroyed` list included.
    entry: JsonObject = previous if previous and previous.get("sha256_after") == outcome.sha256_after else {
        **fresh.to_json(), "destroyed": []}
    if outcome.created:
        _audit_all(session, plan.request_ids, "dataset.erased", {k: entry[k] for k in entry if k != "destroyed"})
    _save(session, attempt, ledger.with_dataset(entry))
    return DatasetErasure.from_json(entry, version_id=outcome.version.id, keys=keys)


def snapshot_model(session: Session, attempt: JobAttempt, plan: UnlearningPlan,
                   erasure: DatasetErasure) -> ModelSnapshot | None:
    """The model's current version, as the next version's inputs; None when an earlier attempt
    of this job already promoted its version."""
    if plan.model_id is None:
        raise RuntimeError(f"job {plan.job_id} names no model")
    model = model_service.get_model(session, plan.model_id)
    if model_service.promoted_by(session, model.id, attempt.job_id):
        return None
    old = model_service.current_version(session, model)
    old_dataset = dataset_service.get_version(session, old.dataset_version_id)
    choice = method_choice.choose(session, model, method_choice.choose_method(model, old_dataset.rows))
    return version_snapshot(session, model, dataset_service.get_version(session, erasure.version_id), choice,
                            holds=dataset_service.holds_subjects(session, old.dataset_version_id, erasure.keys))


def version_snapshot(session: Session, model: Model, new_dataset: DatasetVersion, choice: MethodSettings, *,
                     holds: bool) -> ModelSnapshot:
    """The model's current version as a method's inputs, towards `new_dataset` (the erased
    version; the rehearsal passes the version itself and erases in memory)."""
    old = model_service.current_version(session, model)
    old_dataset = dataset_service.get_version(session, old.dataset_version_id)
    dataset = dataset_service.get_dataset(session, model.dataset_id)
    shape = old.shape
    return ModelSnapshot(
        model=model.name, model_id=model.id, family=model.family, params=dict(old.params), seed=old.seed,
        shape=Shape(n_features=int(shape["n_features"]), n_classes=int(shape["n_classes"])),
        sisa=Sisa.from_json(old.sisa), holdout_fraction=model.holdout_fraction,
        version_before=old.version, sha256_before=old.sha256,
        old_shards=tuple(Shard.from_json(s) for s in old.shards), old_state=dict(old.state or {}),
        manifest_sha=old.manifest_sha256, features=tuple(dataset.feature_columns),
        old_dataset_sha=old_dataset.sha256, new_dataset_sha=new_dataset.sha256, new_dataset_version_id=new_dataset.id,
        same_lineage=new_dataset.parent_version_id == old_dataset.id or new_dataset.id == old_dataset.id,
        method=choice.method, holds=holds,
        references=tuple(ReferenceModel(r.id, r.position, r.pool_size, r.membership_seed, r.weights_sha256)
                         for r in reference_service.live(session, model.id)),
        reference_pool=method_choice.reference_pool_size(model, old_dataset.rows),
        text=dataset.is_text, method_settings=None if choice.method in EXACT and choice.reason is None else choice,
    )


def record_unchanged(session: Session, attempt: JobAttempt, snapshot: ModelSnapshot) -> None:
    """The model's current version never held the subjects: nothing to unlearn."""
    _save(session, attempt, _ledger(session, attempt).with_model({
        "model": snapshot.model, "model_id": str(snapshot.model_id), "version_before": snapshot.version_before,
        "sha256_before": snapshot.sha256_before, "note": "current version never held the subjects", "destroyed": [],
    }))


def record_escalation(session: Session, attempt: JobAttempt, plan: UnlearningPlan, snapshot: ModelSnapshot,
                      escalation: Escalation) -> None:
    """An approximate result missed its thresholds; the worker falls back to an exact method."""
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    _audit_all(session, plan.request_ids, "unlearning.escalated", {"model": snapshot.model, **escalation.to_json()})


def record_unlearned(session: Session, attempt: JobAttempt, plan: UnlearningPlan, snapshot: ModelSnapshot,
                     result: VerifiedVersion) -> None:
    """Promote the verified version, move the live requests to verifying, audit."""
    figures = result.verification.to_json()
    escalations = [e.to_json() for e in result.escalations]
    version = model_service.record_version(
        session, model_id=snapshot.model_id, dataset_version_id=snapshot.new_dataset_version_id, family=snapshot.family,
        params=dict(snapshot.params), seed=snapshot.seed, shape=snapshot.shape.to_json(),
        sisa=snapshot.sisa.to_json() if snapshot.sisa else None, manifest_sha=result.manifest_sha,
        shards=[s.to_json() for s in result.shards], metrics={"verification": figures},
        origin={"kind": "unlearning", "job_id": str(attempt.job_id), "method": result.method,
                "requested_method": result.requested_method, "escalations": escalations},
        state=dict(result.state), actor=WORKER,
    )
    entry: dict[str, JsonValue] = {
        "model": snapshot.model, "model_id": str(snapshot.model_id), "version_before": snapshot.version_before,
        "sha256_before": snapshot.sha256_before, "version_after": version.version, "sha256_after": version.sha256,
        "method": result.method, "requested_method": result.requested_method, "escalations": escalations,
        "details": dict(result.details), "verification": figures, "destroyed": [],
    }
    if snapshot.method_settings is not None:
        # The method and settings the job started with, and where they came from (the
        # certificate names them too).
        entry["method_settings"] = snapshot.method_settings.to_json(result.settings)
    if snapshot.params.get("base_archive_sha256"):
        # A model fine-tuned from an imported base: the certificate states what its erasure covers.
        entry["base"] = {"base_id": snapshot.params.get("base_id"), "architecture": snapshot.params.get("architecture"),
                         "archive_sha256": snapshot.params["base_archive_sha256"]}
    after = result.verification.after
    for request in request_outcome.of_job(session, attempt.job_id, lock=True):
        if request.status == "processing":
            shown: dict[str, Any] = {"after": after.to_json(), "method": result.method}
            if snapshot.method_settings is not None:
                shown["method_settings"] = entry["method_settings"]
            if result.verification.verdicts is not None:
                shown["verdicts"] = dict(result.verification.verdicts)
            request_outcome.verifying(
                session, request, {"verification": {snapshot.model: shown}}, WORKER, model=snapshot.model,
                method=result.method, mia_auc_before=result.verification.before.mia_auc, mia_auc_after=after.mia_auc)
    _audit_all(session, plan.request_ids, "model.unlearned", {
        "model": snapshot.model, "version_before": snapshot.version_before, "version_after": version.version,
        "sha256_after": version.sha256, "method": result.method, "escalated": bool(result.escalations),
    })
    # An exact result's failed sanity check alarms the operator; the request still completes.
    sanity.alarm(session, attempt.job_id, entry)
    ledger = _ledger(session, attempt).with_model(entry)
    if result.no_op_control is not None:
        ledger = ledger.with_no_op_control(result.no_op_control)
    _save(session, attempt, ledger)


def destroy_superseded(session: Session, attempt: JobAttempt, plan: UnlearningPlan,
                       erasure: DatasetErasure) -> list[str]:
    """Mark what holds the erased subjects destroyed: the model's superseded versions trained on
    a dataset version holding them, and those dataset versions no live model version needs.
    Answers the hashes whose bytes must go, whose deletion is recorded and not yet carried out
    (the bytes go only after this commits). The job's result keeps them, so a retry after a
    failed deletion finishes them before the requests complete."""
    keys = list(erasure.keys)
    if not keys:
        return []
    job_service.renew(session, attempt.job_id, attempt.attempt, attempt.lease_seconds)
    holding = dataset_service.versions_holding(session, plan.client, keys)
    doomed = []
    if plan.model_id is not None and holding:
        doomed = model_service.superseded_versions(session, model_service.get_model(session, plan.model_id), holding)
    candidates = model_service.mark_versions_destroyed(session, doomed)
    # Reference models hold personal data too: every one whose half held an erased subject goes
    # (decided from the keys, so a subject the model held out costs a reference needlessly, never
    # the reverse), and a low-priority job trains replacements on the new data.
    doomed_references = []
    if plan.model_id is not None and holding:
        doomed_references = reference_service.destroy_holding(session, plan.model_id, keys)
        candidates |= {r.weights_sha256 for r in doomed_references}
        if doomed_references:
            reference_service.schedule_refill(session, model_service.get_model(session, plan.model_id))
    in_use = model_service.dataset_versions_in_use(session, holding)
    destroyed_datasets, dataset_shas = dataset_service.destroy_versions(session, holding, keys, in_use=in_use)
    removed = schedule_unreferenced(session, candidates | dataset_shas)
    destroyed_models: list[JsonObject] = [
        {"version": v.version, "sha256": v.sha256, "artifacts": sorted(model_service.version_artifacts(v) & set(removed))}
        for v in doomed
    ]
    destroyed_references: list[JsonObject] = [
        {"id": str(r.id), "position": r.position, "generation": r.generation, "sha256": r.weights_sha256,
         "artifacts": sorted({r.weights_sha256} & set(removed))} for r in doomed_references
    ]
    ledger = _ledger(session, attempt).with_destroyed(
        artifacts=removed, model_versions=destroyed_models, references=destroyed_references,
        dataset_versions=destroyed_datasets)
    if destroyed_models or destroyed_datasets or destroyed_references:
        _audit_all(session, plan.request_ids, "artifacts.destroyed",
                   {"model_versions": destroyed_models, "dataset_versions": destroyed_datasets,
                    "reference_models": destroyed_references})
    _save(session, attempt, ledger)
    return list(ledger.artifacts_to_delete or ())


def complete(session: Session, attempt: JobAttempt) -> None:
    """The job is done: store its result, complete every request whose jobs all finished."""
    job_service.complete(session, attempt.job_id, attempt.attempt, _ledger(session, attempt).to_json())
    completion.complete_finished(session, job_service.get(session, attempt.job_id))


def complete_without_requests(session: Session, attempt: JobAttempt) -> None:
    """Every request of the job was held, cancelled or denied before it ran."""
    job_service.complete(session, attempt.job_id, attempt.attempt, JobLedger.without_requests().to_json())

