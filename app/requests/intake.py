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

from sqlalchemy import JSON, String, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, make_transient_to_detached

from app.audit import service as audit_service
from app.audit.models import AuditEvent, AuditHead
from app.db import UTCDateTime
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
EMPTY_AT_INTAKE = ("held_from", "status_reason", "extended_days", "decided_at", "completed_at", "outcome", "progress")


def _one_request_statement():
    columns = [column.name for column in REQUESTS.columns if column.name not in EMPTY_AT_INTAKE]
    # Data-modifying CTEs: every part inserts only if the request row did, and PostgreSQL checks
    # the subjects' foreign key at the end of the statement, when the request row exists.
    sql = f"""
        WITH new_request AS (
            INSERT INTO {REQUESTS.name} ({", ".join(columns)}) VALUES ({", ".join(":" + c for c in columns)})
            ON CONFLICT (client, external_id) DO NOTHING
            RETURNING id
        ), subjects AS (
            INSERT INTO {SUBJECTS.name} (request_id, kind, subject_key)
            SELECT new_request.id, s.kind, s.subject_key
            FROM new_request, unnest(:kinds, :subject_keys) AS s(kind, subject_key)
        ), first_event AS (
            INSERT INTO {AuditEvent.__tablename__} (stream, seq, type, at, actor, data, prev_hash, hash)
            SELECT :stream, 1, :type, :at, :actor, :data, :prev_hash, :hash FROM new_request
        )
        INSERT INTO {AuditHead.__tablename__} (stream, seq, hash) SELECT :stream, 1, :hash FROM new_request
        RETURNING seq
    """
    return text(sql).bindparams(
        *(bindparam(column.name, type_=column.type) for column in REQUESTS.columns if column.name not in EMPTY_AT_INTAKE),
        bindparam("kinds", type_=ARRAY(String)), bindparam("subject_keys", type_=ARRAY(String)),
        bindparam("at", type_=UTCDateTime()), bindparam("data", type_=JSON()),
    )


_ONE_REQUEST = _one_request_statement()


def store_one_postgres(session: Session, principal: Principal, row: dict[str, Any], keys: dict[str, str]) -> bool:
    """Store one new request with its subjects and first audit event in a single statement;
    False if its external_id is taken (nothing was written)."""
    (event,), (_head,) = audit_service.first_links([received_event(principal, row, keys)])
    params = {name: value for name, value in row.items() if name not in EMPTY_AT_INTAKE}
    params.update(stream=event["stream"], type=event["type"], at=event["at"], actor=event["actor"], data=event["data"],
                  prev_hash=event["prev_hash"], hash=event["hash"], kinds=list(keys), subject_keys=list(keys.values()))
    return session.execute(_ONE_REQUEST, params).first() is not None


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
