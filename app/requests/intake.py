"""Storing new erasure requests: the statements intake runs for every request, kept few.

A new request is three things in the caller's transaction: its row (skipped when its
(client, external_id) is taken), a row per subject key, and the first link of its audit chain
with the chain's head. On PostgreSQL any number of requests go in one statement (one round trip);
on SQLite, which has no round trips, one multi-row statement per table.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import String, insert
from sqlalchemy.orm import Session, make_transient_to_detached

from app.audit import service as audit_service
from app.audit.chain import GENESIS
from app.audit.models import AuditEvent, AuditHead
from app.idempotency.models import IdempotencyRecord
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
_REQUEST_COLUMNS = [column for column in REQUESTS.columns if column.name not in EMPTY_AT_INTAKE]


def _array(name: str, sql_type: str) -> str:
    # Binary: psycopg's text form escapes every element with a regular expression.
    return f"CAST(%({name})b AS {sql_type}[])"


def _statements() -> tuple[str, str]:
    """(one request, many requests): data-modifying CTEs that write subjects and audit links
    only for the requests actually inserted, in one statement and one round trip. PostgreSQL
    checks the subjects' foreign key at the end of the statement, when the request rows exist.

    Many requests travel as one array per column, so the query text stays small and psycopg
    parses it once (a multi-row VALUES list has a parameter per value, and parsing those
    dominated a batch; arrays also beat one JSON document per table); a single request as plain
    values, which cost least."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    names = [column.name for column in _REQUEST_COLUMNS]
    arrays = ", ".join(_array(column.name, column.type.compile(dialect=dialect)) for column in _REQUEST_COLUMNS)
    events = ", ".join(_array(name, sql_type) for name, sql_type in (
        ("id", "uuid"), ("stream", "text"), ("type", "text"), ("at", "timestamptz"), ("actor", "text"),
        ("data", "text"), ("hash", "text"),
    ))
    one = f"""
        WITH new_requests AS (
            INSERT INTO {REQUESTS.name} ({", ".join(names)}) VALUES ({", ".join(f"%({name})s" for name in names)})
            ON CONFLICT (client, external_id) DO NOTHING
            RETURNING id
        ), subjects AS (
            INSERT INTO {SUBJECTS.name} (request_id, kind, subject_key)
            SELECT new_requests.id, s.kind, s.subject_key
            FROM new_requests, unnest({_array("kinds", "text")}, {_array("subject_keys", "text")}) AS s(kind, subject_key)
        ), first_events AS (
            INSERT INTO {AuditEvent.__tablename__} (stream, seq, type, at, actor, data, prev_hash, hash)
            SELECT %(stream)s, 1, %(type)s, %(at)s, %(actor)s, CAST(%(data)s AS json), '{GENESIS}', %(hash)s
            FROM new_requests
        ), heads AS (
            INSERT INTO {AuditHead.__tablename__} (stream, seq, hash) SELECT %(stream)s, 1, %(hash)s FROM new_requests
        )
        SELECT id FROM new_requests
    """
    many = f"""
        WITH new_requests AS (
            INSERT INTO {REQUESTS.name} ({", ".join(names)})
            SELECT * FROM unnest({arrays})
            ON CONFLICT (client, external_id) DO NOTHING
            RETURNING id
        ), subjects AS (
            INSERT INTO {SUBJECTS.name} (request_id, kind, subject_key)
            SELECT s.request_id, s.kind, s.subject_key
            FROM unnest({_array("subject_request_ids", "uuid")}, {_array("kinds", "text")}, {_array("subject_keys", "text")})
                AS s(request_id, kind, subject_key)
            JOIN new_requests ON new_requests.id = s.request_id
        ), events AS (
            SELECT e.* FROM unnest({events}) AS e(request_id, stream, type, at, actor, data, hash)
            JOIN new_requests ON new_requests.id = e.request_id
        ), first_events AS (
            INSERT INTO {AuditEvent.__tablename__} (stream, seq, type, at, actor, data, prev_hash, hash)
            SELECT stream, 1, type, at, actor, CAST(data AS json), '{GENESIS}', hash FROM events
        ), heads AS (
            INSERT INTO {AuditHead.__tablename__} (stream, seq, hash) SELECT stream, 1, hash FROM events
        )
        SELECT id FROM new_requests
    """
    # One request under an Idempotency-Key: stored only if the key is unused, and the key's
    # answer stored with it, in the same statement. A key used meanwhile by a concurrent request
    # makes the second insert into idempotency_keys fail on its primary key, which aborts the
    # whole statement: a key never gets two requests.
    # Typed as text, not varchar(n): an explicit cast to varchar(n) would truncate silently,
    # where the column's own assignment refuses an over-long value.
    typed = ", ".join(
        f"CAST(%({column.name})s AS {'text' if isinstance(column.type, String) else column.type.compile(dialect=dialect)})"
        for column in _REQUEST_COLUMNS
    )
    keyed = one.replace(
        f"VALUES ({', '.join(f'%({name})s' for name in names)})",
        f"SELECT {typed} WHERE NOT EXISTS (SELECT 1 FROM {IdempotencyRecord.__tablename__} "
        "WHERE client = %(client)s AND key = %(idempotency_key)s)",
    ).replace(
        "        SELECT id FROM new_requests\n",
        f"""        , remembered AS (
            INSERT INTO {IdempotencyRecord.__tablename__} (client, key, fingerprint, state, status_code, body, headers, created_at)
            SELECT %(client)s, %(idempotency_key)s, %(fingerprint)s, 'done', %(status_code)s,
                   CAST(%(response_body)s AS json), CAST(%(response_headers)s AS json), %(at)s
            FROM new_requests
        )
        SELECT id FROM new_requests\n""",
    )
    return one, many, keyed


_ONE, _MANY, _ONE_KEYED = _statements()
_EVENT_FIELDS = ("stream", "type", "at", "actor", "hash")


def postgres_statement(principal: Principal, rows: list[tuple[dict[str, Any], dict[str, str]]]) -> tuple[str, dict[str, Any]]:
    """(statement, parameters) that store new requests, each with its subjects and the first
    link of its audit chain, in one statement, and return the ids inserted (a request whose
    external_id is taken writes nothing). Values are what psycopg sends as they are: UUIDs, UTC
    datetimes, strings, booleans; event data as its canonical JSON text, already written for
    its hash. One statement is atomic on its own, so it needs no transaction around it."""
    event_rows, _heads = audit_service.first_links([received_event(principal, row, keys) for row, keys in rows])
    if len(rows) == 1:
        (row, keys), (event,) = rows[0], event_rows
        params: dict[str, Any] = {column.name: row[column.name] for column in _REQUEST_COLUMNS}
        params.update({field: event[field] for field in _EVENT_FIELDS}, data=event["data_json"],
                      kinds=list(keys), subject_keys=list(keys.values()))
        return _ONE, params
    params = {column.name: [row[column.name] for row, _keys in rows] for column in _REQUEST_COLUMNS}
    params.update({field: [event[field] for event in event_rows] for field in _EVENT_FIELDS})
    params.update(
        data=[event["data_json"] for event in event_rows],
        subject_request_ids=[row["id"] for row, keys in rows for _kind in keys],
        kinds=[kind for _row, keys in rows for kind in keys],
        subject_keys=[key for _row, keys in rows for key in keys.values()],
    )
    return _MANY, params


def postgres_statement_keyed(
    principal: Principal, row: dict[str, Any], keys: dict[str, str], idempotency_key: str, fingerprint: str,
    answer: tuple[int, Any, dict[str, str]],
) -> tuple[str, dict[str, Any]]:
    """`postgres_statement` for one request under an Idempotency-Key (scoped to its route):
    nothing is stored if the key is already in use; otherwise the key is stored as done, with
    `answer` (status, body, headers), in the same statement as the request."""
    _statement, params = postgres_statement(principal, [(row, keys)])
    status_code, body, headers = answer
    params.update(idempotency_key=idempotency_key, fingerprint=fingerprint, status_code=status_code,
                  response_body=json.dumps(body), response_headers=json.dumps(headers))
    return _ONE_KEYED, params


def store_postgres(session: Session, principal: Principal, rows: list[tuple[dict[str, Any], dict[str, str]]]) -> set[uuid.UUID]:
    """`postgres_statement` in the session's transaction; returns the ids inserted.

    The statement goes to the session's DBAPI cursor: SQLAlchemy's statement execution
    (parameter processing, result set-up) costs a third of a single intake's CPU."""
    if not rows:
        return set()
    statement, params = postgres_statement(principal, rows)
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(statement, params)
        return {request_id for (request_id,) in cursor.fetchall()}
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
