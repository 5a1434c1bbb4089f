"""Appending to and verifying the audit chains. Services flush; the caller's unit of work commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import GENESIS, ChainResult, event_hash, verify_chain
from app.audit.models import AuditEvent, AuditHead
from app.db import utcnow

SYSTEM = "system"


def request_stream(request_id) -> str:
    return f"request:{request_id}"


def append(session: Session, stream: str, type_: str, actor: str, data: dict[str, Any] | None = None) -> AuditEvent:
    data = data or {}
    head = session.execute(
        select(AuditHead).where(AuditHead.stream == stream).with_for_update()
    ).scalar_one_or_none()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    at = utcnow()
    event = AuditEvent(
        stream=stream, seq=seq, type=type_, at=at, actor=actor, data=data, prev_hash=prev,
        hash=event_hash(prev, stream, seq, type_, at, actor, data),
    )
    session.add(event)
    if head is None:
        session.add(AuditHead(stream=stream, seq=seq, hash=event.hash))
    else:
        head.seq, head.hash = seq, event.hash
    session.flush()
    return event


def events(session: Session, stream: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.stream == stream).order_by(AuditEvent.seq, AuditEvent.id)))


def _as_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq, "type": event.type, "at": event.at, "actor": event.actor,
        "data": event.data, "prev_hash": event.prev_hash, "hash": event.hash,
    }


def verify_stream(session: Session, stream: str) -> ChainResult:
    head = session.get(AuditHead, stream)
    result = verify_chain(stream, (_as_dict(e) for e in events(session, stream)), (head.seq, head.hash) if head else None)
    return _missing_head(result) if head is None else result


def _missing_head(result: ChainResult) -> ChainResult:
    # Every append writes the head, so events without one mean the head row was removed.
    if result.valid and result.length:
        return ChainResult(False, result.length, result.head, 1, "events without a recorded head")
    return result


def verify_all(session: Session) -> Iterator[tuple[str, ChainResult]]:
    """Every chain, including streams that lost all their events but kept a head, and events
    whose stream has no head."""
    heads = {h.stream: (h.seq, h.hash) for h in session.scalars(select(AuditHead))}
    event_streams = set(session.scalars(select(AuditEvent.stream).distinct()))
    for stream in sorted(set(heads) | event_streams):
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.stream == stream).order_by(AuditEvent.seq, AuditEvent.id)
        )
        expected = heads.get(stream)
        result = verify_chain(stream, (_as_dict(e) for e in rows), expected)
        yield stream, _missing_head(result) if expected is None else result
