"""Which SISA shard holds a subject (torch-free, shared by the engine and the lineage lookup).

A subject's records all go to one shard chosen from its subject_key, so erasing the subject
retrains one shard. The rule must never change for stored models: a lookup (and an unlearning
plan) recomputes the shard from the key instead of reading every manifest.
"""

from __future__ import annotations

import hashlib


def shard_of(subject_key: str, shards: int) -> int:
    """Shard index in [0, shards) of the subject with this key (a hex HMAC digest)."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return int(hashlib.sha256(subject_key.encode("ascii")).hexdigest()[:16], 16) % shards
