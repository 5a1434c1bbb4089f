"""The `references` job: train the positions of a model's reference pool that an erasure
destroyed (or that were never trained), on the model's current data. Its rows are
app/training/reference_refill.py's; the training is workers/reference_training.py's."""

from __future__ import annotations

import numpy as np

from app.artifacts.store import get_store
from app.db import session_scope
from app.families.registry import get_family
from app.training import reference_refill
from workers.engine.partition import Manifest
from workers.engine.records import records_and_shape
from workers.jobs import JobContext, TransientError
from workers.reference_training import train_positions
from workers.training import begin


def run(context: JobContext) -> None:
    attempt = begin(context)
    with session_scope() as session:
        plan = reference_refill.start(session, attempt)
    if plan is None:
        return
    spec = get_family(plan.family)
    family, config = spec.load_implementation(), spec.parse_params(dict(plan.params))
    # A text model's records are its windows (workers/engine/records.py), as in training.
    records = records_and_shape(family, config, plan.dataset_sha, plan.features, plan.shape.n_classes, plan.text)[0]
    manifest = Manifest.from_parquet(get_store().get_bytes(plan.manifest_sha))
    trained_ids = manifest.trained_ids()
    trained_ids = trained_ids[np.isin(trained_ids, records.record_ids)]
    trained = train_positions(family, config, plan.shape, records, trained_ids, seed=plan.seed, size=plan.pool_size,
                              positions=list(plan.missing), progress=lambda f, step: context.progress(0.05 + 0.9 * f, step))
    context.check()
    with session_scope() as session:
        recorded = reference_refill.record(session, attempt, plan, trained)
    if not recorded:
        raise TransientError("the model's data changed while its references were trained; refilling again")
