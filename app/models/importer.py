"""Registering a model trained elsewhere, so it can be unlearned later."""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.store import get_store
from app.datasets.ingest import read_version_table
from app.datasets.models import Dataset, Tombstone
from app.db import utcnow
from app.errors import Conflict, Unprocessable
from app.keys.service import Principal
from app.lineage.manifest import HOLDOUT, Manifest
from app.models import service
from app.models import weights as weight_file
from app.models.models import Model
from app.models.schemas import ImportMetadata


def _manifest_bytes(record_ids: np.ndarray, trained: np.ndarray, subject_keys: np.ndarray) -> bytes:
    trained_subjects = set(subject_keys[trained].tolist())
    untouched = np.array([key not in trained_subjects for key in subject_keys.tolist()], dtype=bool)
    keep = trained | untouched
    shards = np.where(trained, 0, HOLDOUT)[keep]
    slices = np.where(trained, 0, HOLDOUT)[keep]
    return Manifest(record_ids[keep], shards.astype(np.int64), slices.astype(np.int64)).to_parquet()


def import_model(session: Session, principal: Principal, meta: ImportMetadata, weights: bytes) -> Model:
    spec, config = service.validate_family(meta.family, meta.params, meta.unlearning_method)
    dataset, version = service.resolve_dataset_version(session, principal, meta.dataset_version_id)
    if session.scalar(select(Model).where(Model.client == principal.client, Model.name == meta.name)):
        raise Conflict(f"A model named '{meta.name}' already exists.")
    store = get_store()
    table = read_version_table(store, version.sha256)
    record_ids = table.column("record_id").to_numpy().astype(np.int64)
    subject_keys = np.asarray(table.column("subject_key").to_pylist(), dtype=object)
    wanted = np.unique(np.asarray(meta.record_ids, dtype=np.int64))
    trained = np.isin(record_ids, wanted)
    if int(trained.sum()) != len(wanted):
        raise Unprocessable(f"{len(wanted) - int(trained.sum())} record ids are not in dataset version {version.id}.")
    erased = session.scalars(
        select(Tombstone.subject_key).where(
            Tombstone.client == dataset.client, Tombstone.subject_key.in_(set(subject_keys[trained].tolist()))
        )
    ).first()
    if erased is not None:
        raise Conflict("These weights were trained on records of a data subject who has been erased; they cannot be imported.")
    shape = {"n_features": len(dataset.feature_columns), "n_classes": max(len(dataset.classes), 2)}
    try:
        weight_file.check(spec, config, shape["n_features"], shape["n_classes"], weights)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    model = Model(
        id=uuid.uuid4(), client=principal.client, name=meta.name, family=spec.name, dataset_id=dataset.id,
        params=spec.dump_params(config), sisa=None, holdout_fraction=0.0, seed=meta.seed,
        unlearning_method=meta.unlearning_method, created_at=utcnow(),
    )
    session.add(model)
    session.flush()
    weights_sha = store.put_bytes(weights)
    manifest_sha = store.put_bytes(_manifest_bytes(record_ids, trained, subject_keys))
    service.record_version(
        session, model_id=model.id, dataset_version_id=version.id, family=spec.name, params=spec.dump_params(config),
        seed=meta.seed, shape=shape, sisa=None, manifest_sha=manifest_sha,
        shards=[{"shard": 0, "weights": weights_sha, "checkpoints": []}], metrics={},
        origin={"kind": "import"}, actor=principal.actor,
    )
    return model
