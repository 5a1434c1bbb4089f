"""What one model's unlearning works on: the records in memory, the old manifest and the
forget records, built from the app's `ModelSnapshot` (shared by the methods and verification)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.artifacts.store import get_store
from app.families.registry import FamilySpec, get_family
from app.unlearning.types import JsonObject, ModelSnapshot, ReferenceModel, Shard, Sisa
from workers.engine.families.base import ModelFamily, Shape
from workers.engine.partition import Manifest
from workers.engine.records import Records, records_and_shape
from workers.engine.unlearning.base import Progress
from workers.engine.verification import references as reference_models

# Retained records an approximate method sees at most (certified_newton sees them all).
RETAIN_SAMPLE = 20_000

Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Context:
    """Everything about one model's unlearning that the method steps need."""

    spec: FamilySpec
    family: ModelFamily
    # The family's validated hyper-parameters (its `config_class`).
    config: object
    shape: Shape
    seed: int
    sisa: Sisa | None
    holdout_fraction: float
    old_records: Records
    new_records: Records
    old_manifest: Manifest
    old_shards: tuple[Shard, ...]
    old_state: JsonObject
    # Erased records the old version trained on (not those it held out).
    forget_ids: Ids
    # The new dataset version descends directly from the one the model was trained on, so every
    # record id means the same row in both and SISA checkpoints stay valid.
    same_lineage: bool
    progress: Progress | None = None
    # The model's live reference models (the per-record audit) and the pool it should have.
    references: tuple[ReferenceModel, ...] = ()
    reference_pool: int = 0
    # Each request of the job with its subject keys: each gets its own verdict.
    requests: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # A remediated slice of a dataset that declares a source column: each forget record's source
    # (None where it has none). The verdicts then cluster the forget records by subject and by
    # source (intervals.connected_clusters), not by subject alone.
    forget_sources: Mapping[int, str | None] | None = None


@dataclass(frozen=True)
class CandidateVersion:
    """Stage 2 of a new model version: every shard's method output stored as the candidate (its
    manifest in memory, its networks stored), not yet verified."""

    method: str
    manifest: Manifest
    shards: tuple[Shard, ...]
    state: JsonObject
    details: JsonObject
    # An approximate method's whole config as it ran; None for exact methods.
    settings: JsonObject | None = None


def context_for(snapshot: ModelSnapshot, keys: Sequence[str], progress: Progress | None = None,
                forget_records: Sequence[int] | None = None,
                requests: tuple[tuple[str, tuple[str, ...]], ...] = (),
                forget_sources: Mapping[int, str | None] | None = None) -> Context:
    """Load the records of the old and the new dataset version and find the forget records: those
    of the erased subjects `keys`, or the records `forget_records` of a remediated slice
    (docs/remediation.md). `requests` pairs each request of a batch with its subjects' keys;
    `forget_sources` gives a remediated slice's records their source, where one is declared."""
    spec = get_family(snapshot.family)
    family, config = spec.load_implementation(), spec.parse_params(dict(snapshot.params))

    def load(sha: str) -> Records:
        return records_and_shape(family, config, sha, snapshot.features, snapshot.shape.n_classes, snapshot.text)[0]

    old_records = load(snapshot.old_dataset_sha)
    new_records = old_records if snapshot.new_dataset_sha == snapshot.old_dataset_sha else load(snapshot.new_dataset_sha)
    keyset = set(keys)
    erased_mask = np.array([k in keyset for k in old_records.subject_keys.tolist()], dtype=bool)
    if forget_records is not None:
        erased_mask |= np.isin(old_records.record_ids, np.asarray(list(forget_records), dtype=np.int64))
    old_manifest = Manifest.from_parquet(get_store().get_bytes(snapshot.manifest_sha))
    forget_ids: Ids = np.intersect1d(old_records.record_ids[erased_mask], old_manifest.trained_ids())
    return Context(
        spec=spec, family=family, config=config,
        shape=snapshot.shape, seed=snapshot.seed, sisa=snapshot.sisa, holdout_fraction=snapshot.holdout_fraction,
        old_records=old_records, new_records=new_records, old_manifest=old_manifest, old_shards=snapshot.old_shards,
        old_state=snapshot.old_state, forget_ids=forget_ids, same_lineage=snapshot.same_lineage, progress=progress,
        references=snapshot.references, reference_pool=snapshot.reference_pool, requests=requests,
        forget_sources=forget_sources,
    )


def halves(ctx: Context) -> reference_models.Halves:
    """The model's references split into the tuning and the confirmation half."""
    return reference_models.split(ctx.references, ctx.reference_pool)


def holdout_half(ctx: Context, ids: Ids, *, confirmation: bool) -> Ids:
    """The holdout records among `ids` (of the new dataset version) whose subjects confirm (the
    verdict's) or tune (stopping rules, loss targets, repair)."""
    if not len(ids):
        return ids
    keys = ctx.new_records.subject_keys[np.searchsorted(ctx.new_records.record_ids, ids)].tolist()
    confirms = reference_models.holdout_confirms(keys, ctx.seed)
    return np.asarray(ids[confirms == confirmation], dtype=np.int64)


def retain_sample(ctx: Context, limit: int | None = RETAIN_SAMPLE) -> Ids:
    """The trained records that stay, at most `limit` of them (a sample fixed by the seed)."""
    trained = ctx.old_manifest.trained_ids()
    retain = trained[~np.isin(trained, ctx.forget_ids)]
    if limit is not None and len(retain) > limit:
        retain = np.random.default_rng(ctx.seed).choice(retain, size=limit, replace=False)
    return np.sort(retain)
