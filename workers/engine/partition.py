"""How a dataset version's records are split for training: holdout subjects, SISA shards by
subject, slices by subject (or, for models trained before that layout, by record). Pure numpy;
the same rules serve training and unlearning, so an erasure can tell exactly which shards and
slices a subject touched."""

from __future__ import annotations

import hashlib

import numpy as np

from app.lineage.manifest import HOLDOUT, Manifest
from app.lineage.sharding import shard_of
from app.unlearning.types import SLICE_BY_RECORD, SLICE_BY_SUBJECT, SLICE_KEYS
from workers.engine.training import slice_positions

__all__ = ["HOLDOUT", "Manifest", "holdout_subjects", "partition"]


def _unit_interval(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) / 2**64


def holdout_subjects(subject_keys: np.ndarray, fraction: float, seed: int) -> set[str]:
    """Subjects kept out of training (by subject, so membership tests see unseen people)."""
    if fraction <= 0:
        return set()
    return {key for key in np.unique(subject_keys).tolist() if _unit_interval(f"holdout:{seed}:{key}") < fraction}


def partition(record_ids: np.ndarray, subject_keys: np.ndarray, *, seed: int, holdout_fraction: float,
              shards: int, slices: int, slice_key: str = SLICE_BY_RECORD) -> Manifest:
    """Each record's shard (by its subject key; -1 for a holdout subject) and slice within the
    shard: by a hash of its id (`slice_key` "record", how every model trained before the choice
    was cut) or of its subject key ("subject": a subject's records share one slice, so erasing it
    retrains its shard only from that slice)."""
    if slice_key not in SLICE_KEYS:
        raise ValueError(f"unknown SISA slice key {slice_key!r}")
    held = holdout_subjects(subject_keys, holdout_fraction, seed)
    shard_ids = np.array(
        [HOLDOUT if key in held else shard_of(key, shards) for key in subject_keys.tolist()], dtype=np.int64
    )
    slice_ids = np.full(len(record_ids), HOLDOUT, dtype=np.int64)
    for shard in range(shards):
        members = np.flatnonzero(shard_ids == shard)
        # By position, not by searching the ids.
        keys = subject_keys[members] if slice_key == SLICE_BY_SUBJECT else None
        for index, positions in enumerate(slice_positions(record_ids[members], slices, seed, keys)):
            slice_ids[members[positions]] = index
    return Manifest(record_ids.astype(np.int64), shard_ids, slice_ids)
