"""The lineage index: from a subject to the dataset versions and model versions that hold it.

A lookup is two indexed queries (subject_records by subject_key, then model_versions by
dataset_version_id), never a scan, so it stays fast however large the datasets are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.store import ArtifactStore, get_store
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.identities import service as identity_service
from app.keys.service import Principal
from app.lineage.manifests import manifest_index
from app.lineage.sharding import shard_of
from app.models.models import Model, ModelVersion
from app.pseudonym import subject_digest, subject_keys


def lookup(
    session: Session, principal: Principal | None, identifiers: dict[str, str], *, include_slices: bool = False,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Where the subject's records are, among the principal's client's datasets (None: every
    client), found by its identifiers and every identifier linked to them (app/identities/). A
    kind the client does not know answers 422. Answers the subject-key digest, never the
    identifiers."""
    keys = subject_keys(identifiers)
    linked = None
    if principal is not None and not principal.is_admin:
        identity_service.check_known(session, principal.client, keys)
        linked = identity_service.resolve(session, principal.client, keys.items()).pairs
    return lookup_keys(session, principal, keys, include_slices=include_slices, store=store, linked=linked)


def lookup_keys(
    session: Session, principal: Principal | None, keys: dict[str, str], *, include_slices: bool = False,
    store: ArtifactStore | None = None, linked: Iterable[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """As `lookup`, from subject keys (kind → key), searching the `linked` (kind, key) pairs
    they resolved to when given. `principal` None means every client (workers)."""
    kind_of = {key: kind for kind, key in (keys.items() if linked is None else linked)}
    query = (
        select(
            SubjectRecords.subject_key, SubjectRecords.record_ids, DatasetVersion.id, DatasetVersion.version,
            DatasetVersion.destroyed_at, Dataset.id, Dataset.name, Dataset.subject_kind, Dataset.current_version,
        )
        .join(DatasetVersion, DatasetVersion.id == SubjectRecords.dataset_version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(SubjectRecords.subject_key.in_(list(kind_of)))
    )
    if principal is not None and not principal.is_admin:
        query = query.where(Dataset.client == principal.client)
    datasets, records_in = [], {}
    for key, record_ids, version_id, version, destroyed_at, dataset_id, name, kind, current in session.execute(query):
        if kind_of[key] != kind:  # keys are kind-specific HMACs; this only makes it explicit
            continue
        records_in[version_id] = (key, record_ids)
        datasets.append({
            "dataset_id": dataset_id, "name": name, "version": version, "dataset_version_id": version_id,
            "records": len(record_ids), "current": current == version and destroyed_at is None,
            "destroyed": destroyed_at is not None,
        })
    datasets.sort(key=lambda d: (d["name"], d["version"]))
    models = []
    for row in models_trained_on(session, records_in):
        key, record_ids = records_in[row["dataset_version_id"]]
        sisa, manifest = row.pop("sisa"), row.pop("manifest_sha256")
        shard = shard_of(key, int(sisa["shards"])) if sisa else None
        hit = {**row, "records": len(record_ids), "shard": shard, "slices": None}
        if include_slices and not row["destroyed"]:
            count, shards, slices = manifest_index(store or get_store(), manifest).locate(record_ids)
            # A subject lives in one shard; -1 there means it was held out of training.
            hit.update(records=count, shard=shards[0] if len(shards) == 1 else hit["shard"], slices=slices)
        models.append(hit)
    return {"subject_digest": subject_digest(keys), "datasets": datasets, "models": models}


def models_trained_on(session: Session, dataset_version_ids: Iterable[uuid.UUID]) -> list[dict[str, Any]]:
    """Model versions trained on any of these dataset versions, by model name and version."""
    ids = list(dataset_version_ids)
    if not ids:
        return []
    query = (
        select(
            ModelVersion.dataset_version_id, Model.client, Model.name, Model.id, ModelVersion.version, ModelVersion.id,
            Model.current_version, ModelVersion.destroyed_at, ModelVersion.sisa, ModelVersion.manifest_sha256,
        )
        .join(Model, Model.id == ModelVersion.model_id)
        .where(ModelVersion.dataset_version_id.in_(ids))
        .order_by(Model.name, ModelVersion.version)
    )
    return [
        {
            "client": client, "model": name, "model_id": model_id, "version": version, "model_version_id": model_version_id,
            "dataset_version_id": dataset_version_id, "current": current == version and destroyed_at is None,
            "destroyed": destroyed_at is not None, "sisa": sisa, "manifest_sha256": manifest_sha256,
        }
        for dataset_version_id, client, name, model_id, version, model_version_id, current, destroyed_at, sisa, manifest_sha256
        in session.execute(query)
    ]
