"""Which reference models of a model hold a subject (torch-free, shared by the engine, which
trains the references, and the erasure, which destroys those that held an erased subject).

References come in complementary pairs: a subject is in exactly one of references 2j and 2j+1,
chosen from a hash of (seed, j, subject key). The rule must never change for stored references:
an erasure recomputes membership from the key instead of storing it per reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def side(seed: int, pair: int, subject_key: str) -> int:
    """0 or 1: which reference of pair `pair` holds the subject."""
    return hashlib.sha256(f"reference:{seed}:{pair}:{subject_key}".encode()).digest()[0] & 1


def membership(subject_keys: Sequence[str], count: int, seed: int) -> np.ndarray:
    """[n, count] bool: a record of subject subject_keys[i] is in reference k's training data."""
    if count < 2 or count % 2:
        raise ValueError("reference models come in pairs: count must be even and at least 2")
    keys = list(subject_keys)
    pairs = count // 2
    # Each subject hashed once; its records take its row.
    row: dict[str, int] = {}
    codes = np.asarray([row.setdefault(key, len(row)) for key in keys], dtype=np.int64)
    sides = np.array([[side(seed, pair, key) for pair in range(pairs)] for key in row], dtype=np.int64)
    found = np.zeros((len(keys), count), dtype=bool)
    if keys:
        found[np.arange(len(keys))[:, None], 2 * np.arange(pairs) + sides[codes]] = True
    return found


def holds(position: int, seed: int, subject_key: str) -> bool:
    """Whether reference `position` (of any pool size) holds the subject."""
    return side(seed, position // 2, subject_key) == position % 2
