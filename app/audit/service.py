"""Appending to and verifying the audit chains. Services flush; the caller's unit of work commits."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

from sqlalchemy import JSON, ColumnElement, Text, bindparam, cast, func, insert, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import CTE

from app.audit.chain import GENESIS, ChainResult, canonical_json, event_hash, hash_event, verify_chain
from app.audit.models import AuditEvent, AuditHead
from app.db import utcnow

EVENTS, HEADS = AuditEvent.__table__, AuditHead.__table__


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


def head(session: Session, stream: str) -> tuple[int, str | None]:
    """The stream's last link (sequence number, hash); (0, None) before its first event."""
    row = session.get(AuditHead, stream)
    return (row.seq, row.hash) if row else (0, None)


def first_links(first_events: list[tuple[str, str, str, dict[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """Rows of audit_events and audit_heads that begin a chain for each (stream, type, actor,
    data). Each event row also carries `data_json`, the canonical JSON its hash covers, for a
    writer that stores the data as JSON text."""
    event_rows, head_rows = [], []
    for stream, type_, actor, data in first_events:
        at = utcnow()
        data_json = canonical_json(data)
        digest = hash_event(GENESIS, stream, 1, type_, at, actor, data_json)
        event_rows.append({
            "stream": stream, "seq": 1, "type": type_, "at": at, "actor": actor, "data": data,
            "prev_hash": GENESIS, "hash": digest, "data_json": data_json.decode(),
        })
        head_rows.append({"stream": stream, "seq": 1, "hash": digest})
    return event_rows, head_rows


def start_chains(session: Session, first_events: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Append the first event of each (stream, type, actor, data) whose stream this transaction
    has just begun, e.g. a request inserted a moment ago. Such a stream can have no head yet, so
    none is read or locked: if one did exist, inserting the head would fail instead of forking
    the chain. Core inserts, many chains per statement, because intake runs this per request."""
    if not first_events:
        return
    event_rows, head_rows = first_links(first_events)
    for row in event_rows:
        del row["data_json"]  # the JSON column writes `data` itself
    session.execute(insert(EVENTS), event_rows if len(event_rows) > 1 else event_rows[0])
    session.execute(insert(HEADS), head_rows if len(head_rows) > 1 else head_rows[0])


# The fields of a new chain's first link that vary: the parameters of `first_links_part`.
_LINK_FIELDS = ("stream", "type", "at", "actor", "data", "hash")


def first_links_part(owner: ColumnElement, *, many: bool) -> list[CTE]:
    """`start_chains` as part of one PostgreSQL statement: data-modifying CTEs that append the
    first link of a chain, and its head, for each row of `owner`'s CTE (the ids of the requests
    the statement inserted), so that a row not inserted starts no chain.

    One chain takes audit_stream, audit_type, audit_at, audit_actor, audit_data (the canonical
    JSON text that the hash covers) and audit_hash; `many` takes an array of each and
    audit_owners, each chain's owner, matched with `owner` (see `first_links_values`)."""
    if many:
        # Text, not varchar(n): a cast to varchar(n) would truncate silently, where the column's
        # own assignment refuses an over-long value.
        types = {"owners": owner.type, **{field: Text() for field in _LINK_FIELDS}, "at": EVENTS.c.at.type}
        given = func.unnest(*(cast(bindparam(f"audit_{name}"), ARRAY(sql_type)) for name, sql_type in types.items())) \
            .table_valued("owner", *_LINK_FIELDS).render_derived(name="given")
        chains = select(*(given.c[field] for field in _LINK_FIELDS)) \
            .join_from(given, owner.table, owner == given.c.owner).cte("chains")
    else:
        chains = select(*(bindparam(f"audit_{field}").label(field) for field in _LINK_FIELDS)) \
            .select_from(owner.table).subquery("chain")
    first, genesis = literal(1), literal(GENESIS)
    events = insert(EVENTS).from_select(
        ["stream", "seq", "type", "at", "actor", "data", "prev_hash", "hash"],
        select(chains.c.stream, first, chains.c.type, chains.c.at, chains.c.actor, cast(chains.c.data, JSON), genesis, chains.c.hash),
    ).cte("first_events")
    heads = insert(HEADS).from_select(["stream", "seq", "hash"], select(chains.c.stream, first, chains.c.hash)).cte("heads")
    return [events, heads]


def first_links_values(first_events: list[tuple[str, str, str, dict[str, Any]]], owners: list | None = None) -> dict[str, Any]:
    """The parameters of `first_links_part` for the (stream, type, actor, data) of each new
    chain: of one chain, or, given each chain's owner, of `many`."""
    event_rows, _heads = first_links(first_events)
    for row in event_rows:
        row["data"] = row.pop("data_json")
    if owners is None:
        (row,) = event_rows
        return {f"audit_{field}": row[field] for field in _LINK_FIELDS}
    values = {f"audit_{field}": [row[field] for row in event_rows] for field in _LINK_FIELDS}
    values["audit_owners"] = owners
    return values


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


def verify_all(session: Session, batch_size: int = 5000) -> Iterator[tuple[str, ChainResult]]:
    """Every chain, in stream order, including streams that lost all their events but kept a head,
    and events whose stream has no head. One ordered pass over the events (not one query per
    chain), so verifying a log of many chains costs a single scan."""
    heads = {h.stream: (h.seq, h.hash) for h in session.scalars(select(AuditHead))}
    rows = session.execute(
        select(
            AuditEvent.stream, AuditEvent.seq, AuditEvent.type, AuditEvent.at, AuditEvent.actor, AuditEvent.data,
            AuditEvent.prev_hash, AuditEvent.hash,
        )
        .order_by(AuditEvent.stream, AuditEvent.seq, AuditEvent.id)
        .execution_options(yield_per=batch_size)
    )
    results: dict[str, ChainResult] = {}
    # ORDER BY stream keeps each chain's rows together whatever the collation; groupby skips the
    # rest of a chain once verify_chain stops at its first bad link.
    for stream, chain in groupby(rows, key=lambda row: row.stream):
        expected = heads.get(stream)
        result = verify_chain(stream, (row._mapping for row in chain), expected)
        results[stream] = _missing_head(result) if expected is None else result
    for stream in sorted(set(heads) | set(results)):
        yield stream, results[stream] if stream in results else verify_chain(stream, (), heads[stream])
