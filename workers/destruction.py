"""Destroying every superseded artifact that still holds an erased subject: old weight files,
SISA checkpoints, manifests and dataset files. An artifact still referenced by a live version
(a SISA shard the erasure did not touch, its checkpoints before the first affected slice) held
no erased record and is kept."""

from __future__ import annotations

from sqlalchemy import delete, select

from app.artifacts.store import get_store
from app.audit import service as audit_service
from app.datasets import erasure as dataset_erasure
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.db import session_scope, utcnow
from app.jobs import service as job_service
from app.models.models import Model, ModelVersion

WORKER = "worker:unlearning"


def _artifacts(version: ModelVersion) -> set[str]:
    shas = {version.manifest_sha256}
    for shard in version.shards:
        shas.add(shard["weights"])
        shas.update(shard.get("checkpoints") or [])
    return shas


def destroy_superseded(context, plan: dict) -> None:
    keys = plan.get("keys") or []
    if not keys:
        return
    store = get_store()
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
        doomed_ids = {v.id for v in doomed}
        live_refs: set[str] = set()
        for version in session.scalars(select(ModelVersion).join(Model, Model.id == ModelVersion.model_id).where(
                Model.client == plan["client"], ModelVersion.destroyed_at.is_(None))):
            if version.id not in doomed_ids:
                live_refs |= _artifacts(version)
        destroyed_models = []
        for version in doomed:
            removed = sorted(_artifacts(version) - live_refs)
            for sha in removed:
                store.delete(sha)
            version.destroyed_at = utcnow()
            destroyed_models.append({"version": version.version, "sha256": version.sha256, "artifacts": removed})
        session.flush()
        destroyed_datasets = []
        for version_id in sorted(holding, key=str):
            version = session.get(DatasetVersion, version_id)
            dataset = session.get(Dataset, version.dataset_id)
            still_used = session.scalar(select(ModelVersion.id).where(
                ModelVersion.dataset_version_id == version.id, ModelVersion.destroyed_at.is_(None)))
            if version.version == dataset.current_version or still_used is not None:
                continue  # another model's job still needs it; that job destroys it
            dataset_erasure.destroy_version_file(session, version, store=store)
            session.execute(delete(SubjectRecords).where(
                SubjectRecords.dataset_version_id == version.id, SubjectRecords.subject_key.in_(keys)))
            destroyed_datasets.append({"dataset_id": str(dataset.id), "version": version.version, "sha256": version.sha256})
        result = plan["result"]
        if result.get("model") is not None:
            result["model"]["destroyed"] = result["model"].get("destroyed", []) + destroyed_models
        if result.get("dataset") is not None:
            result["dataset"]["destroyed"] = result["dataset"].get("destroyed", []) + destroyed_datasets
        if destroyed_models or destroyed_datasets:
            for request_id in plan["request_ids"]:
                audit_service.append(session, audit_service.request_stream(request_id), "artifacts.destroyed", WORKER,
                                     {"model_versions": destroyed_models, "dataset_versions": destroyed_datasets})
        job_service.fenced(session, context.job_id, context.attempt, result=result)
