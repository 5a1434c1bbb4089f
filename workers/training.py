"""Training jobs: a model version from a dataset version, one network or SISA shards.

Everything is written to the content-addressed store first; the database learns of the new
version only in the final, fenced commit, so a worker that lost its lease leaves no version. The
rows are app/training/service.py's; this module trains."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from app.artifacts.store import get_store
from app.config import get_settings
from app.db import session_scope
from app.families.registry import get_family
from app.training import service
from app.training.types import TrainedModel
from app.unlearning.types import SLICE_BY_RECORD, JobAttempt, Shard
from workers import reference_training
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


def run(context: JobContext) -> None:
    attempt = begin(context)
    with session_scope() as session:
        plan = service.start(session, attempt)
    spec = get_family(plan.family)
    config = spec.parse_params(plan.params)
    family = spec.load_implementation()
    context.progress(0.02, "loading data")
    records, shape = records_and_shape(family, config, plan.dataset_sha, plan.features, plan.classes, plan.text)
    sisa = plan.sisa
    shard_count = sisa.shards if sisa else 1
    manifest = partition(
        records.record_ids, records.subject_keys, seed=plan.seed, holdout_fraction=plan.holdout_fraction,
        shards=shard_count, slices=sisa.slices if sisa else 1, slice_key=sisa.slice_key if sisa else SLICE_BY_RECORD,
    )
    trained = train_shards(
        family=family, config=config, shape=shape, records=records, manifest=manifest, seed=plan.seed,
        sisa=sisa, shard_list=list(range(shard_count)),
        progress=lambda f, step: context.progress(0.05 + 0.85 * f, step),
    )
    shards = [trained[s] for s in range(shard_count)]
    context.progress(0.92, "evaluating")
    metrics = evaluate_version(family, config, shape, records, manifest, shards)
    manifest_sha = get_store().put_bytes(manifest.to_parquet())
    # The per-record audit's reference pool, trained with the model (workers/reference_training.py).
    pool = plan.reference_pool
    references = reference_training.train_positions(
        family, config, shape, records, manifest.trained_ids(), seed=plan.seed, size=pool,
        positions=list(range(pool)), progress=lambda f, step: context.progress(0.93 + 0.06 * f, step),
    ) if pool else {}
    context.check()
    with session_scope() as session:
        service.record_trained(session, attempt, plan, TrainedModel(
            params=spec.dump_params(config), shape=shape, manifest_sha=manifest_sha, shards=tuple(shards),
            metrics=metrics, references=references))
