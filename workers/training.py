"""Training jobs: a model version from a dataset version, one network or SISA shards.

Everything is written to the content-addressed store first; the database learns of the new
version only in the final, fenced commit, so a worker that lost its lease leaves no version."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.artifacts.store import get_store
from app.config import get_settings
from app.datasets.ingest import read_version_table
from app.datasets.models import Dataset, DatasetVersion
from app.db import session_scope
from app.families.registry import get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models.models import Model
from app.models.service import record_version
from workers.engine.families.base import Shape
from workers.engine.serialization import state_to_bytes
from workers.engine.training import derive_seed, device_from_setting, set_determinism, train_sisa_shard, train_single
from workers.partition import HOLDOUT, Manifest, partition

log = logging.getLogger("obliviate.training")


@dataclass
class Records:
    """A dataset version in memory, indexed by record id."""

    record_ids: np.ndarray
    subject_keys: np.ndarray
    features: np.ndarray
    labels: np.ndarray

    def rows_for(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.searchsorted(self.record_ids, ids)
        return torch.from_numpy(self.features[index]), torch.from_numpy(self.labels[index])


def load_records(version_sha: str, feature_columns: list[str]) -> Records:
    table = read_version_table(get_store(), version_sha)
    order = np.argsort(table.column("record_id").to_numpy(), kind="stable")
    features = np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in feature_columns])
    return Records(
        record_ids=table.column("record_id").to_numpy()[order].astype(np.int64),
        subject_keys=np.asarray(table.column("subject_key").to_pylist(), dtype=object)[order],
        features=np.ascontiguousarray(features[order]),
        labels=table.column("label").to_numpy()[order].astype(np.int64),
    )


@dataclass
class TextRecords(Records):
    """A text dataset version in memory: `features` are the training windows of every record
    (workers/engine/families/causal_lm.py) and `labels` each window's record id, so rows_for
    selects a set of records' windows as for tabular rows."""

    texts: list[str] = field(default_factory=list)

    def rows_for(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = np.isin(self.labels, ids)
        return torch.from_numpy(self.features[mask]), torch.from_numpy(self.labels[mask])

    def texts_for(self, ids: np.ndarray) -> list[str]:
        return [self.texts[i] for i in np.searchsorted(self.record_ids, ids).tolist()]


def load_text_records(version_sha: str, block_size: int) -> TextRecords:
    from workers.engine.families.causal_lm import record_windows

    table = read_version_table(get_store(), version_sha)
    order = np.argsort(table.column("record_id").to_numpy(), kind="stable")
    record_ids = table.column("record_id").to_numpy()[order].astype(np.int64)
    texts = [table.column("text").to_pylist()[i] for i in order.tolist()]
    windows, owners = record_windows(texts, block_size)
    return TextRecords(
        record_ids=record_ids, subject_keys=np.asarray(table.column("subject_key").to_pylist(), dtype=object)[order],
        features=windows, labels=record_ids[owners], texts=texts,
    )


def records_and_shape(family, config, dataset_sha: str, features: list[str], classes: int, text: bool) -> tuple[Records, Shape]:
    """A dataset version's records in memory, and the shape of the networks trained on them."""
    if text:
        return load_text_records(dataset_sha, config.block_size), family.shape(config)
    records = load_records(dataset_sha, features)
    return records, Shape(n_features=records.features.shape[1], n_classes=max(classes, 2))


def shard_seed(seed: int, shard: int, sisa: bool) -> int:
    return derive_seed(seed, "shard", shard) if sisa else seed


def configure_threads() -> None:
    threads = get_settings().torch_threads
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def shape_dict(shape: Shape) -> dict[str, int]:
    return {"n_features": shape.n_features, "n_classes": shape.n_classes}


def train_shards(
    *, family, config, shape: Shape, records: Records, manifest: Manifest, seed: int, sisa: dict | None,
    shard_list: list[int], resume: dict[int, tuple[int, dict, list[str]]] | None = None, progress=None,
    label: str = "",
) -> dict[int, dict[str, Any]]:
    """Train the given shards; `resume[shard] = (start_slice, checkpoint_state, kept_checkpoint_hashes)`.
    Returns shard → {"shard", "weights", "checkpoints"} with every artifact stored."""
    store = get_store()
    device = device_from_setting(get_settings().device)
    resume = resume or {}
    n_slices = sisa["slices"] if sisa else 1
    total_steps = max(1, sum(n_slices - resume.get(s, (0, None, []))[0] for s in shard_list))
    done = 0
    out: dict[int, dict[str, Any]] = {}
    for shard in shard_list:
        start, init_state, kept = resume.get(shard, (0, None, []))
        checkpoints = list(kept[:start])
        if sisa:
            slices = [records.rows_for(manifest.slice_ids(shard, r)) for r in range(n_slices)]

            def on_checkpoint(r: int, state, shard=shard):
                nonlocal done
                checkpoints.append(store.put_bytes(state_to_bytes(state, {"shard": str(shard), "slice": str(r)})))
                done += 1
                if progress:
                    progress(done / total_steps, f"{label}shard {shard + 1}/{sisa['shards']}, slice {r + 1}/{n_slices}")

            state = train_sisa_shard(
                family, config, shape, slices, seed=shard_seed(seed, shard, True), device=device,
                start_slice=start, init_state=init_state, on_checkpoint=on_checkpoint, n_shards=sisa["shards"],
            )
        else:
            features, labels = records.rows_for(manifest.slice_ids(0, 0))
            state = train_single(family, config, shape, features, labels, seed=seed, device=device, init_state=init_state)
            done += 1
            if progress:
                progress(done / total_steps, f"{label}network trained")
        weights = store.put_bytes(state_to_bytes(state, {"shard": str(shard)}))
        out[shard] = {"shard": shard, "weights": weights, "checkpoints": checkpoints}
    return out


def evaluate_version(family, config, shape, records: Records, manifest: Manifest, shards: list[dict]) -> dict[str, Any]:
    from workers.engine.serialization import load_network
    from workers.engine.verification import accuracy_and_loss

    store = get_store()
    networks = [load_network(family, config, shape, store.get_bytes(s["weights"])) for s in shards]
    holdout_ids = manifest.record_ids[manifest.shards == HOLDOUT]
    train_ids = manifest.trained_ids()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(train_ids, size=min(len(train_ids), 5000), replace=False)) if len(train_ids) else train_ids
    return {
        "holdout": accuracy_and_loss(family, networks, *records.rows_for(np.sort(holdout_ids))),
        "train_sample": accuracy_and_loss(family, networks, *records.rows_for(sample)),
        "records": {"trained": int(len(train_ids)), "holdout": int(len(holdout_ids))},
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
    sisa = snapshot["sisa"]
    manifest = partition(
        records.record_ids, records.subject_keys, seed=snapshot["seed"], holdout_fraction=snapshot["holdout_fraction"],
        shards=sisa["shards"] if sisa else 1, slices=sisa["slices"] if sisa else 1,
    )
    shard_count = sisa["shards"] if sisa else 1
    trained = train_shards(
        family=family, config=config, shape=shape, records=records, manifest=manifest, seed=snapshot["seed"],
        sisa=sisa, shard_list=list(range(shard_count)),
        progress=lambda f, step: context.progress(0.05 + 0.85 * f, step),
    )
    shards = [trained[s] for s in range(shard_count)]
    context.progress(0.92, "evaluating")
    metrics = evaluate_version(family, config, shape, records, manifest, shards)
    manifest_sha = get_store().put_bytes(manifest.to_parquet())
    context.check()
    with session_scope() as session:
        version = record_version(
            session, model_id=snapshot["model_id"], dataset_version_id=snapshot["dataset_version_id"], family=spec.name,
            params=spec.dump_params(config), seed=snapshot["seed"], shape=shape_dict(shape), sisa=sisa, manifest_sha=manifest_sha,
            shards=shards, metrics=metrics, origin={"kind": "training", "job_id": str(context.job_id)},
        )
        job_service.complete(
            session, context.job_id, context.attempt,
            {"model_version": version.version, "sha256": version.sha256, "metrics": metrics},
        )
