"""Destroying every superseded artifact that still holds an erased subject: old weight files,
SISA checkpoints, manifests and dataset files.

The versions are marked destroyed, and the bytes no live version of any client references are
recorded for deletion, in one transaction (`app.artifacts.service`); the bytes are deleted only
after it committed. An artifact still referenced by a live version (a SISA shard the erasure did
not touch, the same imported weights or an identical manifest of another client) is kept; the
erasure that destroys its last live reference removes it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import delete, select

from app.artifacts import service as artifact_service
from app.artifacts.store import get_store
from app.audit import service as audit_service
from app.datasets import erasure as dataset_erasure
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.db import session_scope, utcnow
from app.jobs import service as job_service
from app.models.models import Model, ModelVersion

WORKER = "worker:unlearning"
log = logging.getLogger("obliviate.destruction")


def destroy_superseded(context, plan: dict) -> list[str]:
    """Mark what holds the erased subjects destroyed; answers the hashes whose bytes must go,
    whose deletion is recorded and not yet carried out. The job's result keeps them, so a retry
    after a failed deletion finishes them before the requests complete."""
    keys = plan.get("keys") or []
    if not keys:
        return []
    with session_scope() as session:
        job_service.renew(session, context.job_id, context.attempt, context.lease_seconds)
        holding = set(session.scalars(
            select(SubjectRecords.dataset_version_id).join(DatasetVersion, DatasetVersion.id == SubjectRecords.dataset_version_id)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .where(SubjectRecords.subject_key.in_(keys), Dataset.client == plan["client"], DatasetVersion.destroyed_at.is_(None))
        ))
        doomed: list[ModelVersion] = []
        if plan["model_id"] is not None and holding:
            model = session.get(Model, plan["model_id"])
            doomed = list(session.scalars(select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.dataset_version_id.in_(holding),
                ModelVersion.destroyed_at.is_(None), ModelVersion.version != model.current_version,
            )))
        candidates: set[str] = set()
        for version in doomed:
            version.destroyed_at = utcnow()
            candidates |= artifact_service.model_version_artifacts(version)
        session.flush()
        destroyed_datasets = []
        for version_id in sorted(holding, key=str):
            version = session.get(DatasetVersion, version_id)
            dataset = session.get(Dataset, version.dataset_id)
            still_used = session.scalar(select(ModelVersion.id).where(
                ModelVersion.dataset_version_id == version.id, ModelVersion.destroyed_at.is_(None)))
            if version.version == dataset.current_version or still_used is not None:
                continue  # another model's job still needs it; that job destroys it
            candidates.add(dataset_erasure.mark_version_destroyed(session, version))
            session.execute(delete(SubjectRecords).where(
                SubjectRecords.dataset_version_id == version.id, SubjectRecords.subject_key.in_(keys)))
            destroyed_datasets.append({"dataset_id": str(dataset.id), "version": version.version, "sha256": version.sha256})
        removed = artifact_service.schedule_unreferenced(session, candidates)
        destroyed_models = [
            {"version": v.version, "sha256": v.sha256, "artifacts": sorted(artifact_service.model_version_artifacts(v) & set(removed))}
            for v in doomed
        ]
        result = plan["result"]
        result["artifacts_to_delete"] = sorted(set(result.get("artifacts_to_delete", [])) | set(removed))
        if result.get("model") is not None:
            result["model"]["destroyed"] = result["model"].get("destroyed", []) + destroyed_models
        if result.get("dataset") is not None:
            result["dataset"]["destroyed"] = result["dataset"].get("destroyed", []) + destroyed_datasets
        if destroyed_models or destroyed_datasets:
            for request_id in plan["request_ids"]:
                audit_service.append(session, audit_service.request_stream(request_id), "artifacts.destroyed", WORKER,
                                     {"model_versions": destroyed_models, "dataset_versions": destroyed_datasets})
        job_service.fenced(session, context.job_id, context.attempt, result=result)
    return result["artifacts_to_delete"]


def purge(shas: Iterable[str] | None = None, *, limit: int = 500) -> int:
    """Carry out pending deletions, one artifact per transaction: the given hashes, or (the
    beat sweeper) the oldest ones left by a worker that stopped between a destruction's commit
    and its deletions. Answers how many artifacts had bytes removed."""
    store = get_store()
    if shas is None:
        with session_scope() as session:
            shas = artifact_service.due(session, limit=limit)
    removed = 0
    for sha in shas:
        with session_scope() as session:
            removed += artifact_service.finish(session, sha, store=store)
    return removed
