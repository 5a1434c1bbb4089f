"""The hash chain, as pure functions, so a chain exported as JSON verifies offline.

hash = SHA-256(prev_hash ‖ canonical JSON of the event), where the event is
{stream, seq, type, at, actor, data} and prev_hash of the first event is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hashed_time(at: datetime | str) -> str:
    # An exported chain carries `at` as JSON text, and JSON renderers drop digits (a time on a
    # whole second loses its ".000000"): hash the instant, not the way it was written.
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
        if at.tzinfo is None:
            raise ValueError("event time without a timezone")
    return format_time(at)


def event_hash(prev_hash: str, stream: str, seq: int, type_: str, at: datetime | str, actor: str, data: Any) -> str:
    return hash_event(prev_hash, stream, seq, type_, at, actor, canonical_json(data))


def hash_event(prev_hash: str, stream: str, seq: int, type_: str, at: datetime | str, actor: str, data_json: bytes) -> str:
    """`event_hash` given the canonical JSON of the event's data, which intake also stores, so
    that it is serialised once."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_event(stream, seq, type_, at, actor, data_json)).hexdigest()


def canonical_event(stream: str, seq: int, type_: str, at: datetime | str, actor: str, data_json: bytes) -> bytes:
    """canonical_json({stream, seq, type, at, actor, data}), written around the data's own
    canonical JSON: sorted keys (actor, at, data, seq, stream, type), no spaces, each string as
    the same encoder writes it."""
    return b"".join((
        b'{"actor":', canonical_json(actor), b',"at":', canonical_json(_hashed_time(at)), b',"data":', data_json,
        b',"seq":', canonical_json(seq), b',"stream":', canonical_json(stream), b',"type":', canonical_json(type_), b"}",
    ))


@dataclass(frozen=True)
class ChainResult:
    valid: bool
    length: int
    head: str
    broken_at_seq: int | None = None
    problem: str | None = None


def verify_chain(
    stream: str, events: Iterable[Mapping[str, Any]], expected_head: tuple[int, str] | None = None
) -> ChainResult:
    """Check one chain; `events` in stored order (by seq). `expected_head` is (seq, hash) from the
    head table, which catches a truncated tail."""
    prev = GENESIS
    count = 0
    for position, event in enumerate(events, start=1):
        count = position
        seq = event["seq"]
        if seq != position:
            return ChainResult(False, count, prev, seq, f"expected seq {position}, found {seq}")
        if event["prev_hash"] != prev:
            return ChainResult(False, count, prev, seq, "prev_hash does not match the previous event")
        try:
            recomputed = event_hash(
                prev, stream, seq, event["type"], event["at"], event["actor"], event["data"]
            )
        except (TypeError, ValueError):
            return ChainResult(False, count, prev, seq, "event cannot be hashed")
        if recomputed != event["hash"]:
            return ChainResult(False, count, prev, seq, "hash does not match the event's content")
        prev = event["hash"]
    if expected_head is not None:
        head_seq, head_hash = expected_head
        if head_seq != count or head_hash != prev:
            return ChainResult(
                False, count, prev, count + 1 if head_seq > count else head_seq,
                f"chain ends at seq {count} but its recorded head is seq {head_seq}",
            )
    return ChainResult(True, count, prev)
