"""The reference pool of a model (workers/engine/references.py): trained with the model when its
unlearning method is approximate, read by verification, refilled by the `references` job after
an erasure destroyed the ones that held its subjects.

References train on the model's training records (never its holdout), each on the subjects its
side of the pair holds, so a reference on a later dataset version keeps the same membership rule
and mixes freely with the older ones."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from app.artifacts.store import get_store
from app.config import get_settings
from app.datasets.models import Dataset, DatasetVersion
from app.db import session_scope
from app.families.registry import get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import references as reference_service
from app.models import service as model_service
from app.models.models import Model
from workers.engine import references as engine
from workers.engine.families.base import Shape
from workers.engine.serialization import load_network, state_to_bytes
from workers.engine.training import device_from_setting, set_determinism

log = logging.getLogger("obliviate.references")
EXACT = ("retrain", "sisa")


def pool_size(model: Model, rows: int) -> int:
    """K for a model: the setting when its unlearning method (set or chosen) is approximate and
    it is not a SISA model (whose shards are its references), else 0."""
    from workers.unlearning_methods import choose_method

    size = get_settings().audit_references
    if size <= 0 or model.sisa or choose_method(model, rows) in EXACT:
        return 0
    return size - size % 2


def train_positions(family, config, shape: Shape, records, trained_ids: np.ndarray, *, seed: int, size: int,
                    positions: list[int], progress=None) -> dict[int, str]:
    """Train the given positions on the trained records; answers position → stored weights hash."""
    store = get_store()
    device = device_from_setting(get_settings().device)
    trained_ids = np.sort(trained_ids)
    index = np.searchsorted(records.record_ids, trained_ids)
    features, labels = records.rows_for(trained_ids)
    member = engine.membership(records.subject_keys[index].tolist(), size, seed)
    found = {}
    for done, position in enumerate(positions):
        state = engine.train_reference(family, config, shape, features, labels, member[:, position], seed=seed,
                                       index=position, device=device)
        found[position] = store.put_bytes(state_to_bytes(state, {"reference": str(position)}))
        if progress:
            progress((done + 1) / len(positions), f"reference {done + 1}/{len(positions)}")
    return found


def record_all(session, *, model_id, size: int, seed: int, dataset_version_id, trained: dict[int, str]) -> None:
    for position, sha in sorted(trained.items()):
        reference_service.record(session, model_id=model_id, position=position, pool_size=size, membership_seed=seed,
                                 dataset_version_id=dataset_version_id, weights_sha=sha)


def load_pool(session, model_id, family, config, shape: Shape) -> list[dict[str, Any]]:
    """The live references of a model with their networks, as plain data for verification."""
    store = get_store()
    return [{"position": r.position, "pool_size": r.pool_size, "seed": r.membership_seed, "id": str(r.id),
             "weights": r.weights_sha256,
             "network": load_network(family, config, shape, store.get_bytes(r.weights_sha256))}
            for r in reference_service.live(session, model_id)]


def out_mask(pool: list[dict[str, Any]], subject_keys: list[str]) -> np.ndarray:
    """[n, len(pool)] true where a reference never saw the record's subject."""
    if not pool:
        return np.zeros((len(subject_keys), 0), dtype=bool)
    columns = []
    for reference in pool:
        member = engine.membership(subject_keys, reference["pool_size"], reference["seed"])
        columns.append(~member[:, reference["position"]])
    return np.column_stack(columns)


def holding(pool: list[dict[str, Any]], subject_keys: list[str]) -> list[dict[str, Any]]:
    """The references whose training data held one of these (trained) subjects."""
    if not subject_keys:
        return []
    mask = out_mask(pool, subject_keys)
    return [reference for k, reference in enumerate(pool) if not mask[:, k].all()]


def run(context) -> None:
    """The refill job: train the missing positions of the pool on the model's current data."""
    from workers.training import configure_threads, load_records

    set_determinism()
    configure_threads()
    with session_scope() as session:
        job = session.get(Job, context.job_id)
        model = session.get(Model, job.model_id)
        version = model_service.current_version(session, model) if model.current_version else None
        if version is None:
            job_service.complete(session, context.job_id, context.attempt, {"note": "the model has no version"})
            return
        dataset = session.get(Dataset, model.dataset_id)
        dataset_version = session.get(DatasetVersion, version.dataset_version_id)
        size = pool_size(model, dataset_version.rows)
        missing = reference_service.missing_positions(session, model.id, size) if size else []
        snapshot = {"model_id": model.id, "family": model.family, "params": version.params, "shape": version.shape,
                    "seed": version.seed, "manifest": version.manifest_sha256, "features": list(dataset.feature_columns),
                    "dataset_sha": dataset_version.sha256, "dataset_version_id": dataset_version.id}
    if not missing:
        with session_scope() as session:
            job_service.complete(session, context.job_id, context.attempt, {"trained": [], "pool_size": size})
        return
    from workers.partition import Manifest

    spec = get_family(snapshot["family"])
    records = load_records(snapshot["dataset_sha"], snapshot["features"])
    manifest = Manifest.from_parquet(get_store().get_bytes(snapshot["manifest"]))
    trained_ids = manifest.trained_ids()
    trained_ids = trained_ids[np.isin(trained_ids, records.record_ids)]
    trained = train_positions(spec.load_implementation(), spec.parse_params(snapshot["params"]), Shape(**snapshot["shape"]),
                              records, trained_ids, seed=snapshot["seed"], size=size, positions=missing,
                              progress=lambda f, step: context.progress(0.05 + 0.9 * f, step))
    context.check()
    with session_scope() as session:
        record_all(session, model_id=snapshot["model_id"], size=size, seed=snapshot["seed"],
                   dataset_version_id=snapshot["dataset_version_id"], trained=trained)
        job_service.complete(session, context.job_id, context.attempt,
                             {"trained": sorted(trained), "pool_size": size, "dataset_version_id": str(snapshot["dataset_version_id"])})

