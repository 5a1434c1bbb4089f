"""Storing new erasure requests: the statements intake runs for every request, kept few.

A new request is three things in the caller's transaction: its row (skipped when its
(client, external_id) is taken), a row per subject key, and the first link of its audit chain
with the chain's head. On PostgreSQL a single create sends them as one statement (one round
trip); batches, and SQLite, use one multi-row statement per table.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import insert
from sqlalchemy.orm import Session, make_transient_to_detached

from app.audit import service as audit_service
from app.audit.models import AuditEvent, AuditHead
from app.keys.service import Principal
from app.requests.models import ErasureRequest, RequestSubject

REQUESTS = ErasureRequest.__table__
SUBJECTS = RequestSubject.__table__


def received_event(principal: Principal, row: dict[str, Any], keys: dict[str, str]) -> tuple[str, str, str, dict]:
    """(stream, type, actor, data) of the event that opens a request's audit chain."""
    return audit_service.request_stream(row["id"]), "request.received", principal.actor, {
        "jurisdiction": row["jurisdiction"], "source": row["source"],
        "external_id": row["external_id"], "identity_verified": row["identity_verified"],
        "identifier_kinds": sorted(keys), "subject_digest": row["subject_digest"],
        "due_at": row["due_at"].isoformat(), "status": "received",
    }


_INSERT_REQUESTS: dict[str, Any] = {}


def insert_requests(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert the rows whose (client, external_id) is free; returns the ids inserted. A taken
    external_id is skipped, not an error: an intake racing another for the same id waits for
    the other transaction, then skips, so both end with one row and a usable transaction."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    statement = _INSERT_REQUESTS.get(dialect)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        statement = (dialect_insert(REQUESTS).on_conflict_do_nothing(index_elements=["client", "external_id"])
                     .returning(REQUESTS.c.id))
        _INSERT_REQUESTS[dialect] = statement
    return set(session.scalars(statement, rows[0] if len(rows) == 1 else rows))


def insert_subjects(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(SUBJECTS), rows)


# Columns a new request always leaves empty; not sent, so the statement carries fewer parameters.
EMPTY_AT_INTAKE = frozenset({"held_from", "status_reason", "extended_days", "decided_at", "completed_at", "outcome", "progress"})
_REQUEST_COLUMNS = [column.name for column in REQUESTS.columns if column.name not in EMPTY_AT_INTAKE]

# Data-modifying CTEs: every part inserts only if the request row did, and PostgreSQL checks the
# subjects' foreign key at the end of the statement, when the request row exists. Written for
# psycopg (pyformat parameters) because it is sent on the DBAPI cursor, see store_one_postgres.
_ONE_REQUEST_SQL = f"""
    WITH new_request AS (
        INSERT INTO {REQUESTS.name} ({", ".join(_REQUEST_COLUMNS)})
        VALUES ({", ".join(f"%({c})s" for c in _REQUEST_COLUMNS)})
        ON CONFLICT (client, external_id) DO NOTHING
        RETURNING id
    ), subjects AS (
        INSERT INTO {SUBJECTS.name} (request_id, kind, subject_key)
        SELECT new_request.id, s.kind, s.subject_key
        FROM new_request, unnest(CAST(%(kinds)s AS text[]), CAST(%(subject_keys)s AS text[])) AS s(kind, subject_key)
    ), first_event AS (
        INSERT INTO {AuditEvent.__tablename__} (stream, seq, type, at, actor, data, prev_hash, hash)
        SELECT %(stream)s, 1, %(type)s, %(at)s, %(actor)s, %(data)s, %(prev_hash)s, %(hash)s FROM new_request
    )
    INSERT INTO {AuditHead.__tablename__} (stream, seq, hash) SELECT %(stream)s, 1, %(hash)s FROM new_request
    RETURNING seq
"""


def store_one_postgres(session: Session, principal: Principal, row: dict[str, Any], keys: dict[str, str]) -> bool:
    """Store one new request with its subjects and first audit event in a single statement (one
    round trip); False if its external_id is taken (nothing was written).

    The statement goes to the session's DBAPI cursor, in the session's transaction: SQLAlchemy's
    statement execution (parameter processing, result set-up) costs a third of an intake's CPU.
    Values are already what psycopg sends as is: UUIDs, UTC datetimes, strings and lists; the
    event's data is wrapped as JSON, as the JSON column type would."""
    (event,), (_head,) = audit_service.first_links([received_event(principal, row, keys)])
    params = {name: row[name] for name in _REQUEST_COLUMNS}
    params.update(stream=event["stream"], type=event["type"], at=event["at"], actor=event["actor"],
                  data=Json(event["data"]), prev_hash=event["prev_hash"], hash=event["hash"],
                  kinds=list(keys), subject_keys=list(keys.values()))
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(_ONE_REQUEST_SQL, params)
        return cursor.fetchone() is not None
    finally:
        cursor.close()


class StoredRequest(SimpleNamespace):
    """A request as intake has just stored it: every column, as attributes. Answering intake
    needs no ORM object, and building one costs more than the statement that stores the row;
    `attach` turns it into an ErasureRequest when something is to change it."""


def attach(session: Session, row: dict[str, Any]) -> ErasureRequest:
    """The request just inserted, as a persistent object, without reading it back: every column
    is known, and its subjects load on first access."""
    request = ErasureRequest(**row)
    make_transient_to_detached(request)
    session.add(request)
    return request
