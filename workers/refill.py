"""The `references` job: train the positions of a model's reference pool that an erasure
destroyed (or that were never trained), on the model's current data. Low priority: it is created
with a delay (`OBLIVIATE_REFERENCE_REFILL_DELAY_SECONDS`) so the erasures of a window go first,
and until it has run, verification says which references are missing."""

from __future__ import annotations

import numpy as np

from app.artifacts.store import get_store
from app.datasets.models import Dataset, DatasetVersion
from app.db import session_scope
from app.families.registry import get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import references as reference_service
from app.models import service as model_service
from app.models.models import Model
from app.unlearning import service as unlearning_service
from app.unlearning.method_choice import reference_pool_size
from workers.engine.families.base import Shape
from workers.engine.partition import Manifest
from workers.engine.records import records_and_shape
from workers.engine.training import set_determinism
from workers.jobs import TransientError
from workers.references import record_all, train_positions
from workers.training import configure_threads


def run(context) -> None:
    """The refill job: train the missing positions of the pool on the model's current data."""
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
        size = reference_pool_size(model, dataset_version.rows)
        missing = reference_service.missing_positions(session, model.id, size) if size else []
        snapshot = {"model_id": model.id, "family": model.family, "params": version.params, "shape": version.shape,
                    "seed": version.seed, "manifest": version.manifest_sha256, "features": list(dataset.feature_columns),
                    "dataset_sha": dataset_version.sha256, "dataset_version_id": dataset_version.id,
                    "text": dataset.is_text}
    if not missing:
        with session_scope() as session:
            job_service.complete(session, context.job_id, context.attempt, {"trained": [], "pool_size": size})
        return
    spec = get_family(snapshot["family"])
    family, config = spec.load_implementation(), spec.parse_params(snapshot["params"])
    shape = Shape(**snapshot["shape"])
    # A text model's records are its windows (workers/engine/records.py), as in training.
    records = records_and_shape(family, config, snapshot["dataset_sha"], snapshot["features"], shape.n_classes,
                                snapshot["text"])[0]
    manifest = Manifest.from_parquet(get_store().get_bytes(snapshot["manifest"]))
    trained_ids = manifest.trained_ids()
    trained_ids = trained_ids[np.isin(trained_ids, records.record_ids)]
    trained = train_positions(family, config, shape, records, trained_ids, seed=snapshot["seed"], size=size, positions=missing,
                              progress=lambda f, step: context.progress(0.05 + 0.9 * f, step))
    context.check()
    with session_scope() as session:
        # Under the model's row lock, which promoting a new version also takes: an erasure that
        # committed new data meanwhile means these references may hold its subjects. Their bytes
        # are then scheduled like destroyed ones and the job runs again on the new data.
        model = session.get(Model, snapshot["model_id"], with_for_update=True)
        stale = model_service.current_version(session, model).dataset_version_id != snapshot["dataset_version_id"]
        if stale:
            unlearning_service.schedule_unreferenced(session, sorted(trained.values()))
        else:
            record_all(session, model_id=snapshot["model_id"], size=size, seed=snapshot["seed"],
                       dataset_version_id=snapshot["dataset_version_id"], trained=trained)
            job_service.complete(session, context.job_id, context.attempt,
                                 {"trained": sorted(trained), "pool_size": size,
                                  "dataset_version_id": str(snapshot["dataset_version_id"])})
    if stale:
        raise TransientError("the model's data changed while its references were trained; refilling again")
