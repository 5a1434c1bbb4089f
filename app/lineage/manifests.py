"""Reading model manifests (record_id → shard, slice) for lineage lookups.

A manifest is a content-addressed Parquet artifact, so its parsed form can be cached for as long
as the process lives: the same sha256 always means the same rows. Only the first lookup against a
model version pays for reading it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.artifacts.store import ArtifactStore

CACHE_SIZE = 8  # a 1,000,000-record manifest takes about 16 MB here


@dataclass(frozen=True)
class ManifestIndex:
    record_ids: np.ndarray  # sorted
    shard: np.ndarray  # -1: held out of training
    slice: np.ndarray

    def locate(self, record_ids: Sequence[int]) -> tuple[int, list[int], list[int]]:
        """How many of `record_ids` the manifest lists, and their shards and slices (sorted,
        distinct)."""
        wanted = np.asarray(record_ids, dtype=np.int64)
        positions = np.searchsorted(self.record_ids, wanted)
        inside = positions < len(self.record_ids)
        positions, wanted = positions[inside], wanted[inside]
        positions = positions[self.record_ids[positions] == wanted]
        return len(positions), sorted(set(self.shard[positions].tolist())), sorted(set(self.slice[positions].tolist()))


_cache: OrderedDict[tuple[str, str], ManifestIndex] = OrderedDict()
_lock = threading.Lock()


def manifest_index(store: ArtifactStore, sha: str) -> ManifestIndex:
    cache_key = (store.url, sha)
    with _lock:
        if cache_key in _cache:
            _cache.move_to_end(cache_key)
            return _cache[cache_key]
    with store.open_verified(sha) as handle:
        table = pq.read_table(handle, columns=["record_id", "shard", "slice"])
    record_ids = table.column("record_id").to_numpy().astype(np.int64, copy=False)
    order = np.argsort(record_ids, kind="stable")
    index = ManifestIndex(
        record_ids=record_ids[order],
        shard=pc.fill_null(table.column("shard"), -1).to_numpy().astype(np.int32)[order],
        slice=pc.fill_null(table.column("slice"), -1).to_numpy().astype(np.int32)[order],
    )
    with _lock:
        _cache[cache_key] = index
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return index
