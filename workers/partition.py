"""How a dataset version's records are split for training: holdout subjects, SISA shards by
subject, slices by record. Pure numpy; the same rules serve training and unlearning, so an
erasure can tell exactly which shards and slices a subject touched."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.lineage.sharding import shard_of

HOLDOUT = -1


def _unit_interval(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) / 2**64


def holdout_subjects(subject_keys: np.ndarray, fraction: float, seed: int) -> set[str]:
    """Subjects kept out of training (by subject, so membership tests see unseen people)."""
    if fraction <= 0:
        return set()
    return {key for key in np.unique(subject_keys).tolist() if _unit_interval(f"holdout:{seed}:{key}") < fraction}


@dataclass
class Manifest:
    """record_id → (shard, slice); shard -1 marks holdout records, which no weights saw."""

    record_ids: np.ndarray
    shards: np.ndarray
    slices: np.ndarray

    def to_parquet(self) -> bytes:
        order = np.lexsort((self.record_ids, self.slices, self.shards))
        table = pa.table({
            "record_id": pa.array(self.record_ids[order], pa.int64()),
            "shard": pa.array(self.shards[order], pa.int32()),
            "slice": pa.array(self.slices[order], pa.int32()),
        })
        sink = io.BytesIO()
        # Fixed writer options, so the same manifest always hashes the same.
        pq.write_table(table, sink, compression="zstd", use_dictionary=False, write_statistics=False)
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes) -> "Manifest":
        table = pq.read_table(io.BytesIO(data))
        return cls(
            table.column("record_id").to_numpy(), table.column("shard").to_numpy().astype(np.int64),
            table.column("slice").to_numpy().astype(np.int64),
        )

    def trained_ids(self) -> np.ndarray:
        return self.record_ids[self.shards != HOLDOUT]

    def slice_ids(self, shard: int, slice_index: int) -> np.ndarray:
        return np.sort(self.record_ids[(self.shards == shard) & (self.slices == slice_index)])


def partition(record_ids: np.ndarray, subject_keys: np.ndarray, *, seed: int, holdout_fraction: float,
              shards: int, slices: int) -> Manifest:
    from workers.engine.training import assign_slices

    held = holdout_subjects(subject_keys, holdout_fraction, seed)
    shard_ids = np.array(
        [HOLDOUT if key in held else shard_of(key, shards) for key in subject_keys.tolist()], dtype=np.int64
    )
    slice_ids = np.full(len(record_ids), HOLDOUT, dtype=np.int64)
    for shard in range(shards):
        members = np.flatnonzero(shard_ids == shard)
        for index, ids in enumerate(assign_slices(record_ids[members], slices, seed)):
            slice_ids[np.isin(record_ids, ids)] = index
    return Manifest(record_ids.astype(np.int64), shard_ids, slice_ids)
