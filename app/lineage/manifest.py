"""The manifest of a model version: which shard and slice each record went to (torch-free).

Written by training and by the import of weights trained elsewhere, read by unlearning; pure
numpy and parquet, so the API can write one for an import without loading the workers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HOLDOUT = -1


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

    def shard_records(self, shard: int) -> int:
        """Training records the partition gives `shard` (0 for a shard an erasure emptied)."""
        return int(np.count_nonzero(self.shards == shard))

    def slice_ids(self, shard: int, slice_index: int) -> np.ndarray:
        return np.sort(self.record_ids[(self.shards == shard) & (self.slices == slice_index)])
