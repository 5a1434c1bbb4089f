"""Storing new erasure requests: the statements intake runs for every request, kept few.

A new request is three things in the caller's transaction: its row (skipped when its
(client, external_id) is taken), a row per subject key, and the first link of its audit chain
with the chain's head. On PostgreSQL any number of requests go in one statement (one round trip);
on SQLite, which has no round trips, one multi-row statement per table.

The PostgreSQL statement is composed of SQLAlchemy Core parts, each owned by the domain whose
tables it writes (`_statement`), and compiled once at import; the unit of work's inserts on
SQLite share its request insert (`insert_skipping_taken`) and the audit's link values.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, String, Text, bindparam, cast, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.sql.expression import CTE

from app import asyncdb
from app.audit import service as audit_service
from app.db import insert_skipping_taken
from app.idempotency import service as idempotency_service
from app.keys.service import Principal
from app.requests.models import ErasureRequest, RequestSubject

REQUESTS = ErasureRequest.__table__
SUBJECTS = RequestSubject.__table__
_TAKEN = ("client", "external_id")  # a request whose (client, external_id) is taken is skipped


def received_event(principal: Principal, row: dict[str, Any], keys: dict[str, str]) -> tuple[str, str, str, dict]:
    """(stream, type, actor, data) of the event that opens a request's audit chain."""
    return audit_service.request_stream(row["id"]), "request.received", principal.actor, {
        "jurisdiction": row["jurisdiction"], "source": row["source"],
        "external_id": row["external_id"], "identity_verified": row["identity_verified"],
        "identity_verification": {"status": row["verification_status"], "method": row["verification_method"]},
        "identifier_kinds": sorted(keys), "subject_digest": row["subject_digest"],
        "due_at": row["due_at"].isoformat(), "status": "received",
    }


def insert_requests(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert the rows whose (client, external_id) is free; returns the ids inserted. A taken
    external_id is skipped, not an error: an intake racing another for the same id waits for
    the other transaction, then skips, so both end with one row and a usable transaction."""
    if not rows:
        return set()
    statement = insert_skipping_taken(session.get_bind().dialect.name, REQUESTS, _TAKEN, "id")
    return set(session.scalars(statement, rows[0] if len(rows) == 1 else rows))


def insert_subjects(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(SUBJECTS), rows)


# Columns a new request always leaves empty; not sent, so the statement carries fewer parameters.
EMPTY_AT_INTAKE = frozenset({"held_from", "status_reason", "extended_days", "decided_at", "completed_at", "outcome", "progress"})
_REQUEST_COLUMNS = [column for column in REQUESTS.columns if column.name not in EMPTY_AT_INTAKE]
_NAMES = [column.name for column in _REQUEST_COLUMNS]


def requests_part(*, many: bool, guard: ColumnElement[bool] | None = None) -> tuple[CTE, CTE]:
    """`insert_requests` and `insert_subjects` as part of one PostgreSQL statement: the CTE
    new_requests inserts the requests whose (client, external_id) is free and returns their
    ids; the CTE after it, their subjects. PostgreSQL checks the subjects' foreign key at the
    end of the statement, when the request rows exist. Parameters: `request_values`.

    Many requests travel as one array per column, so the statement stays small and psycopg
    parses it once (a multi-row VALUES list has a parameter per value, and parsing those
    dominated a batch; arrays also beat one JSON document per table); one request as plain
    values, which cost least. Under `guard` (one request) the row is inserted only where the
    guard holds; its values are then typed by casts, as a SELECT list has no column types."""
    skipping = insert_skipping_taken("postgresql", REQUESTS, _TAKEN, "id")
    if many:
        given = func.unnest(*(cast(bindparam(column.name), ARRAY(column.type)) for column in _REQUEST_COLUMNS)) \
            .table_valued(*_NAMES).render_derived(name="given")
        new_requests = skipping.from_select(_NAMES, select(*given.c)).cte("new_requests")
        subjects = func.unnest(*(cast(bindparam(name), ARRAY(sql_type)) for name, sql_type in (
            ("subject_request_ids", REQUESTS.c.id.type), ("kinds", Text()), ("subject_keys", Text()),
        ))).table_valued("request_id", "kind", "subject_key").render_derived(name="given_subjects")
        rows = select(subjects.c.request_id, subjects.c.kind, subjects.c.subject_key) \
            .join_from(subjects, new_requests, new_requests.c.id == subjects.c.request_id)
    else:
        if guard is None:
            new_requests = skipping.values({name: bindparam(name) for name in _NAMES})
        else:
            # Text, not varchar(n): a cast to varchar(n) would truncate silently, where the
            # column's own assignment refuses an over-long value.
            typed = [cast(bindparam(column.name), Text() if isinstance(column.type, String) else column.type)
                     for column in _REQUEST_COLUMNS]
            new_requests = skipping.from_select(_NAMES, select(*typed).where(guard))
        new_requests = new_requests.cte("new_requests")
        subjects = func.unnest(cast(bindparam("kinds"), ARRAY(Text())), cast(bindparam("subject_keys"), ARRAY(Text()))) \
            .table_valued("kind", "subject_key").render_derived(name="given_subjects")
        rows = select(new_requests.c.id, subjects.c.kind, subjects.c.subject_key)
    return new_requests, insert(SUBJECTS).from_select(["request_id", "kind", "subject_key"], rows).cte("subjects")


def request_values(rows: list[tuple[dict[str, Any], dict[str, str]]]) -> dict[str, Any]:
    """The parameters of `requests_part` for new rows and their subject keys (`many` unless
    there is one). Values are what psycopg sends as they are: UUIDs, UTC datetimes, strings,
    booleans."""
    if len(rows) == 1:
        (row, keys), = rows
        values = {name: row[name] for name in _NAMES}
        values.update(kinds=list(keys), subject_keys=list(keys.values()))
        return values
    values = {name: [row[name] for row, _keys in rows] for name in _NAMES}
    values.update(
        subject_request_ids=[row["id"] for row, keys in rows for _kind in keys],
        kinds=[kind for _row, keys in rows for kind in keys],
        subject_keys=[key for _row, keys in rows for key in keys.values()],
    )
    return values


def _statement(*, many: bool = False, keyed: bool = False) -> asyncdb.Prepared:
    """Intake's one statement, composed of each domain's part: the requests and their subjects
    (here), the first link of each new request's audit chain (app/audit/service.py) and, under
    an Idempotency-Key, the key's guard and its answer (app/idempotency/service.py). Every part
    after the first writes only for the requests actually inserted; the statement returns
    their ids."""
    new_requests, subjects = requests_part(many=many, guard=idempotency_service.key_unused() if keyed else None)
    parts = [subjects, *audit_service.first_links_part(new_requests.c.id, many=many)]
    if keyed:
        parts.append(idempotency_service.done_part(new_requests.c.id))
    return asyncdb.Prepared(select(new_requests.c.id).add_cte(*parts))


# One request, many requests, one request under an Idempotency-Key.
_ONE, _MANY, _ONE_KEYED = _statement(), _statement(many=True), _statement(keyed=True)


def _values(principal: Principal, rows: list[tuple[dict[str, Any], dict[str, str]]]) -> dict[str, Any]:
    events = [received_event(principal, row, keys) for row, keys in rows]
    values = request_values(rows)
    values.update(audit_service.first_links_values(events, None if len(rows) == 1 else [row["id"] for row, _keys in rows]))
    return values


def postgres_statement(principal: Principal, rows: list[tuple[dict[str, Any], dict[str, str]]]) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) that store new requests, each with its subjects and the first link of
    its audit chain, in one statement, and return the ids inserted (a request whose
    external_id is taken writes nothing). One statement is atomic on its own, so it needs no
    transaction around it; its arrays go in binary (asyncdb.binary_arrays)."""
    prepared = _ONE if len(rows) == 1 else _MANY
    return prepared.sql, prepared.params(_values(principal, rows))


def postgres_statement_keyed(
    principal: Principal, row: dict[str, Any], keys: dict[str, str], idempotency_key: str, fingerprint: str,
    answer: tuple[int, Any, dict[str, str]],
) -> tuple[str, dict[str, Any]]:
    """`postgres_statement` for one request under an Idempotency-Key (scoped to its route):
    nothing is stored if the key is already in use; otherwise the key is stored as done, with
    `answer` (status, body, headers), in the same statement as the request."""
    values = _values(principal, [(row, keys)])
    values.update(idempotency_service.done_values(principal.client, idempotency_key, fingerprint, *answer))
    return _ONE_KEYED.sql, _ONE_KEYED.params(values)


def store_postgres(session: Session, principal: Principal, rows: list[tuple[dict[str, Any], dict[str, str]]]) -> set[uuid.UUID]:
    """`postgres_statement` in the session's transaction; returns the ids inserted.

    The statement goes to the session's DBAPI cursor: SQLAlchemy's statement execution
    (parameter processing, result set-up) costs a third of a single intake's CPU."""
    if not rows:
        return set()
    statement, params = postgres_statement(principal, rows)
    cursor = session.connection().connection.cursor()
    try:
        asyncdb.binary_arrays(cursor)
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
