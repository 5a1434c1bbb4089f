"""Unlearning jobs (DESIGN §1 step 5): erase the subjects from the data, produce and verify a
new model version, promote it, destroy what still holds them, complete the requests.

Each step is safe to repeat: a job that dies half-way is claimed again and finds what its
earlier attempt already committed (the erased dataset version, the promoted model version),
keeping all partial results in `job.result`, which only the owning attempt may write."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from sqlalchemy import select

from app.audit import service as audit_service
from app.datasets import erasure as dataset_erasure
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.datasets.storage import add_tombstones
from app.db import session_scope
from app.families.registry import get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import service as model_service
from app.models.models import Model, ModelVersion
from app.requests import service as request_service
from app.unlearning import completion
from app.unlearning.models import JobRequest
from workers import destruction, unlearning_methods as methods
from workers.jobs import TransientError
from workers.engine.families.base import Shape
from workers.engine.training import set_determinism
from workers.partition import Manifest
from workers.training import configure_threads, load_records

log = logging.getLogger("obliviate.unlearning")
WORKER = completion.WORKER


def _save(session, context, result: dict[str, Any]) -> None:
    job_service.fenced(session, context.job_id, context.attempt, result=result)


def start(context) -> dict[str, Any] | None:
    """Move the job's live requests to processing; detach held or cancelled ones."""
    with session_scope() as session:
        job_service.renew(session, context.job_id, context.attempt, context.lease_seconds)
        job = session.get(Job, context.job_id)
        result = dict(job.result or {})
        live = []
        for request in completion.requests_of(session, job.id, lock=True):
            if request.status in ("scheduled", "processing", "verifying"):
                if request.status == "scheduled":
                    request_service.move(session, request, "process", WORKER, job_id=str(job.id))
                live.append(request)
            elif request.status in ("on_hold", "cancelled", "denied"):
                session.delete(session.get(JobRequest, (job.id, request.id)))
        pairs = sorted({(s.kind, s.subject_key) for r in live for s in r.subjects})
        result["requests"] = [str(r.id) for r in live]
        _save(session, context, result)
        if not live:
            return None
        return {"job": job.id, "client": job.client, "model_id": job.model_id,
                "dataset_id": job.payload.get("dataset_id"), "pairs": pairs, "request_ids": [r.id for r in live],
                "result": result}


def _audit_all(session, request_ids, type_: str, data: dict) -> None:
    for request_id in request_ids:
        audit_service.append(session, audit_service.request_stream(request_id), type_, WORKER, data)


def erase_dataset(context, plan: dict) -> dict:
    """A new current dataset version without the subjects' rows, and tombstones for them."""
    with session_scope() as session:
        if plan["model_id"] is not None:
            dataset = session.get(Dataset, session.get(Model, plan["model_id"]).dataset_id)
        else:
            dataset = session.get(Dataset, uuid.UUID(plan["dataset_id"]))
        keys = [key for kind, key in plan["pairs"] if kind == dataset.subject_kind]
        current = session.scalar(select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.current_version))
        outcome = dataset_erasure.erase_subjects(session, current, keys, context.job_id)
        add_tombstones(session, dataset.client, keys, plan["request_ids"][0])
        previous = plan["result"].get("dataset") or {}
        entry = previous if previous.get("sha256_after") == outcome.sha256_after and previous else {
            "dataset_id": str(dataset.id), "name": dataset.name,
            "version_before": outcome.parent.version, "sha256_before": outcome.sha256_before,
            "version_after": outcome.version.version, "sha256_after": outcome.sha256_after,
            "rows_removed": outcome.rows_removed, "subjects_removed": outcome.subjects_removed, "destroyed": [],
        }
        if outcome.created:
            _audit_all(session, plan["request_ids"], "dataset.erased", {k: entry[k] for k in entry if k != "destroyed"})
        plan["result"]["dataset"] = entry
        plan["keys"] = keys
        plan["new_dataset_version_id"] = outcome.version.id
        _save(session, context, plan["result"])
    return plan


def unlearn_model(context, plan: dict) -> None:
    with session_scope() as session:
        model = session.get(Model, plan["model_id"])
        done = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)).all()
        if any(v.origin.get("job_id") == str(context.job_id) for v in done):
            return  # promoted by an earlier attempt of this job
        old = model_service.current_version(session, model)
        old_dataset = session.get(DatasetVersion, old.dataset_version_id)
        new_dataset = session.get(DatasetVersion, plan["new_dataset_version_id"])
        dataset = session.get(Dataset, model.dataset_id)
        holds = session.scalar(select(SubjectRecords.subject_key).where(
            SubjectRecords.dataset_version_id == old.dataset_version_id, SubjectRecords.subject_key.in_(plan["keys"])))
        info = {
            "model": model.name, "model_id": str(model.id), "family": model.family, "seed": old.seed, "sisa": old.sisa,
            "holdout_fraction": model.holdout_fraction, "params": old.params, "shape": old.shape,
            "version_before": old.version, "sha256_before": old.sha256, "old_shards": old.shards,
            "old_state": dict(old.state or {}), "manifest_sha": old.manifest_sha256, "features": list(dataset.feature_columns),
            "old_dataset_sha": old_dataset.sha256, "new_dataset_sha": new_dataset.sha256,
            "new_dataset_version_id": new_dataset.id,
            "same_lineage": new_dataset.parent_version_id == old_dataset.id or new_dataset.id == old_dataset.id,
            "method": methods.choose_method(model, old_dataset.rows), "holds": holds is not None,
        }
    if not info["holds"]:
        plan["result"]["model"] = {"model": info["model"], "model_id": info["model_id"], "version_before": info["version_before"],
                                   "sha256_before": info["sha256_before"], "note": "current version never held the subjects",
                                   "destroyed": []}
        return
    _unlearn(context, plan, info)


def _unlearn(context, plan: dict, info: dict) -> None:
    from app.artifacts.store import get_store

    spec = get_family(info["family"])
    store = get_store()
    old_records = load_records(info["old_dataset_sha"], info["features"])
    new_records = old_records if info["new_dataset_sha"] == info["old_dataset_sha"] else load_records(info["new_dataset_sha"], info["features"])
    keyset = set(plan["keys"])
    erased_mask = np.array([k in keyset for k in old_records.subject_keys.tolist()], dtype=bool)
    old_manifest = Manifest.from_parquet(store.get_bytes(info["manifest_sha"]))
    forget_ids = np.intersect1d(old_records.record_ids[erased_mask], old_manifest.trained_ids())
    ctx = methods.Context(
        spec=spec, family=spec.load_implementation(), config=spec.parse_params(info["params"]), shape=Shape(**info["shape"]),
        seed=info["seed"], sisa=info["sisa"], holdout_fraction=info["holdout_fraction"], old_records=old_records,
        new_records=new_records, old_manifest=old_manifest, old_shards=info["old_shards"], old_state=info["old_state"],
        forget_ids=forget_ids, same_lineage=info["same_lineage"],
        progress=lambda f, step: context.progress(0.1 + 0.7 * f, step),
    )
    requested = info["method"]
    escalations: list[dict] = []
    if len(forget_ids) == 0:
        # The subjects were only among the holdout: the weights never saw them, so the version is
        # re-linked to the erased dataset version without retraining.
        outcome = methods.Outcome("none_needed", methods.without_forget(ctx), info["old_shards"], info["old_state"],
                                  {"note": "the subjects' records were held out; no weights saw them"})
    elif requested == "retrain":
        outcome = methods.retrain(ctx)
    elif requested == "sisa":
        outcome = methods.sisa(ctx)
    else:
        outcome = methods.approximate(ctx, requested)
    context.progress(0.82, "verifying")
    figures = methods.verify(ctx, outcome, info["old_shards"])
    if outcome.method not in ("retrain", "sisa", "none_needed"):
        failed = methods.check(outcome, figures)
        if failed:
            escalations.append({"from": outcome.method, "to": "retrain", "reasons": failed})
            with session_scope() as session:
                job_service.renew(session, context.job_id, context.attempt, context.lease_seconds)
                _audit_all(session, plan["request_ids"], "unlearning.escalated", {"model": info["model"], **escalations[-1]})
            outcome = methods.retrain(ctx)
            figures = methods.verify(ctx, outcome, info["old_shards"])
    if figures["lineage_proof"]["in_new_manifest"]:
        raise RuntimeError("the new manifest still lists erased records")
    manifest_sha = store.put_bytes(outcome.manifest.to_parquet())
    context.check()
    with session_scope() as session:
        version = model_service.record_version(
            session, model_id=uuid.UUID(info["model_id"]), dataset_version_id=info["new_dataset_version_id"], family=spec.name,
            params=info["params"], seed=info["seed"], shape=info["shape"], sisa=info["sisa"], manifest_sha=manifest_sha,
            shards=outcome.shards, metrics={"verification": figures},
            origin={"kind": "unlearning", "job_id": str(context.job_id), "method": outcome.method,
                    "requested_method": requested, "escalations": escalations},
            state=outcome.state, actor=WORKER,
        )
        entry = {
            "model": info["model"], "model_id": info["model_id"], "version_before": info["version_before"],
            "sha256_before": info["sha256_before"], "version_after": version.version, "sha256_after": version.sha256,
            "method": outcome.method, "requested_method": requested, "escalations": escalations,
            "details": outcome.details, "verification": figures, "destroyed": [],
        }
        plan["result"]["model"] = entry
        for request in completion.requests_of(session, context.job_id, lock=True):
            if request.status == "processing":
                request.progress = {"verification": {info["model"]: {"after": figures["after"], "method": outcome.method}}}
                request_service.move(session, request, "verify", WORKER, model=info["model"], method=outcome.method,
                                     mia_auc_before=figures["before"]["mia_auc"], mia_auc_after=figures["after"]["mia_auc"])
        _audit_all(session, plan["request_ids"], "model.unlearned", {
            "model": info["model"], "version_before": info["version_before"], "version_after": version.version,
            "sha256_after": version.sha256, "method": outcome.method, "escalated": bool(escalations),
        })
        _save(session, context, plan["result"])


def run(context) -> None:
    set_determinism()
    configure_threads()
    plan = start(context)
    if plan is None:
        with session_scope() as session:
            job_service.complete(session, context.job_id, context.attempt, {"requests": [], "note": "no live requests"})
        return
    context.progress(0.05, "erasing dataset rows")
    plan = erase_dataset(context, plan)
    if plan["model_id"] is not None:
        unlearn_model(context, plan)
    context.progress(0.9, "destroying superseded artifacts")
    # After the destruction committed: a rollback there must never have cost live bytes.
    doomed = destruction.destroy_superseded(context, plan)
    try:
        destruction.purge(doomed)
    except Exception as exc:  # the deletions are recorded; a retry (or the sweeper) finishes them
        raise TransientError("the artifact store did not delete the destroyed artifacts") from exc
    with session_scope() as session:
        job_service.complete(session, context.job_id, context.attempt, plan["result"])
        completion.complete_finished(session, session.get(Job, context.job_id))


def on_failed(session, job: Job, reason: str) -> None:
    completion.fail_requests(session, job, reason)
