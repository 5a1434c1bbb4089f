"""Training jobs: a model version from a dataset version, one network or SISA shards.

Everything is written to the content-addressed store first; the database learns of the new
version only in the final, fenced commit, so a worker that lost its lease leaves no version."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from app.artifacts.store import get_store
from app.config import get_settings
from app.datasets.models import Dataset, DatasetVersion
from app.db import session_scope
from app.families.registry import get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import rehearsals as rehearsal_service
from app.models.models import Model
from app.unlearning.method_choice import reference_pool_size
from app.models.service import record_version
from app.unlearning.types import JobAttempt, Shard, Sisa
from workers import references
from workers.engine.families.base import Shape
from workers.engine.partition import HOLDOUT, Manifest, partition
from workers.engine.records import Records, records_and_shape
from workers.engine.shards import train_shards
from workers.engine.training import evaluate, set_determinism
from workers.jobs import JobContext

log = logging.getLogger("obliviate.training")


def configure_threads() -> None:
    threads = get_settings().torch_threads
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def begin(context: JobContext) -> JobAttempt:
    """What a model job does first: deterministic kernels, the configured thread count, and the
    attempt its writes are fenced by."""
    set_determinism()
    configure_threads()
    return JobAttempt(job_id=context.job_id, attempt=context.attempt, lease_seconds=context.lease_seconds)


def evaluate_version(family, config, shape, records: Records, manifest: Manifest, shards: Sequence[Shard]) -> dict[str, Any]:
    from workers.engine.serialization import load_network

    store = get_store()
    networks = [load_network(family, config, shape, store.get_bytes(s.weights)) for s in shards]
    holdout_ids = manifest.record_ids[manifest.shards == HOLDOUT]
    train_ids = manifest.trained_ids()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(train_ids, size=min(len(train_ids), 5000), replace=False)) if len(train_ids) else train_ids
    return {
        "holdout": evaluate(family, networks, *records.rows_for(np.sort(holdout_ids))),
        "train_sample": evaluate(family, networks, *records.rows_for(sample)),
        "records": {"trained": len(train_ids), "holdout": len(holdout_ids)},
    }


def run(context) -> None:
    set_determinism()
    configure_threads()
    with session_scope() as session:
        job = session.get(Job, context.job_id)
        model = session.get(Model, job.model_id)
        dataset = session.get(Dataset, model.dataset_id)
        dataset_version = session.get(DatasetVersion, uuid.UUID(job.payload["dataset_version_id"]))
        spec = get_family(model.family)
        snapshot = {
            "model_id": model.id, "seed": model.seed, "sisa": model.sisa, "holdout_fraction": model.holdout_fraction,
            "params": model.params, "features": list(dataset.feature_columns), "classes": len(dataset.classes),
            "dataset_version_id": dataset_version.id, "dataset_sha": dataset_version.sha256, "text": dataset.is_text,
        }
    config = spec.parse_params(snapshot["params"])
    family = spec.load_implementation()
    context.progress(0.02, "loading data")
    records, shape = records_and_shape(
        family, config, snapshot["dataset_sha"], snapshot["features"], snapshot["classes"], snapshot["text"],
    )
    sisa = Sisa.from_json(snapshot["sisa"])
    manifest = partition(
        records.record_ids, records.subject_keys, seed=snapshot["seed"], holdout_fraction=snapshot["holdout_fraction"],
        shards=sisa.shards if sisa else 1, slices=sisa.slices if sisa else 1,
    )
    shard_count = sisa.shards if sisa else 1
    trained = train_shards(
        family=family, config=config, shape=shape, records=records, manifest=manifest, seed=snapshot["seed"],
        sisa=sisa, shard_list=list(range(shard_count)),
        progress=lambda f, step: context.progress(0.05 + 0.85 * f, step),
    )
    shards = [trained[s] for s in range(shard_count)]
    context.progress(0.92, "evaluating")
    metrics = evaluate_version(family, config, shape, records, manifest, shards)
    manifest_sha = get_store().put_bytes(manifest.to_parquet())
    # The per-record audit's reference pool, trained with the model (workers/references.py).
    with session_scope() as session:
        pool = reference_pool_size(session.get(Model, snapshot["model_id"]), len(records.record_ids))
    trained_references = references.train_positions(
        family, config, shape, records, manifest.trained_ids(), seed=snapshot["seed"], size=pool,
        positions=list(range(pool)), progress=lambda f, step: context.progress(0.93 + 0.06 * f, step),
    ) if pool else {}
    context.check()
    with session_scope() as session:
        references.record_all(session, model_id=snapshot["model_id"], size=pool, seed=snapshot["seed"],
                              dataset_version_id=snapshot["dataset_version_id"], trained=trained_references)
        version = record_version(
            session, model_id=snapshot["model_id"], dataset_version_id=snapshot["dataset_version_id"], family=spec.name,
            params=spec.dump_params(config), seed=snapshot["seed"], shape=shape.to_json(), sisa=snapshot["sisa"],
            manifest_sha=manifest_sha, shards=[s.to_json() for s in shards], metrics=metrics, origin={"kind": "training", "job_id": str(context.job_id)},
        )
        # A model whose unlearning method is approximate (it has references) is rehearsed: a
        # low-priority job finds the settings that work for it (workers/rehearsal.py).
        rehearsal = rehearsal_service.schedule(session, session.get(Model, snapshot["model_id"])) if pool else None
        job_service.complete(
            session, context.job_id, context.attempt,
            {"model_version": version.version, "sha256": version.sha256, "metrics": metrics,
             "references": {"pool_size": pool, "trained": sorted(trained_references)},
             "rehearsal_job_id": str(rehearsal.id) if rehearsal is not None else None},
        )
