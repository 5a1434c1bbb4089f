"""Idempotency-Key handling (docs/architecture.md, "HTTP conventions").

The in-flight marker must be visible to a concurrent duplicate before the first request's work
commits, so claiming and releasing a key use their own short transactions; this is the one
documented exception to "one place commits". The stored response is written in the caller's
unit of work, together with what it created, so a replay can never see a response whose effect
was rolled back.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, bindparam, cast, delete, exists, insert, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import CTE

from app.config import get_settings
from app.db import get_engine, get_sessionmaker, insert_skipping_taken, utcnow
from app.errors import BadRequest, Conflict, Unprocessable
from app.idempotency.models import IdempotencyRecord
from app.pii import find_identifier

MAX_KEY_LENGTH = 255
KEYS = IdempotencyRecord.__table__
DONE = "done"  # the state of a key whose answer is stored


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: Any
    headers: dict[str, str]


def fingerprint(payload: Any) -> str:
    # Keyed, because bodies hold raw identifiers: a plain digest of an email is guessable.
    # NaN and Infinity are allowed here: Python's JSON parser accepts them in a body, and the
    # fingerprint must not fail before validation gets to refuse them.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hmac.digest(get_settings().resolved_secret_key(), canonical.encode(), "sha256").hex()


def validate_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters.")
    if not key.strip():
        raise BadRequest("Idempotency-Key must not be empty.")
    if find_identifier(key):
        # It is stored with the answer: a key made from the person's address would keep it.
        raise BadRequest("Idempotency-Key must not contain an e-mail address or phone number; use a random value.")
    return key


def scoped_key(route: str, key: str) -> str:
    """The stored form of a caller's key: per route, so one key may be reused on another one."""
    return f"{route}:{validate_key(key)}"


def _mark_in_flight(client: str, scoped_key: str, digest: str) -> bool:
    """Insert the in-flight marker and commit it at once; False if the key is taken. On
    PostgreSQL one autocommitted statement (one round trip instead of three, on every keyed
    request); SQLite has no round trips to save."""
    engine = get_engine()
    dialect = engine.dialect.name
    statement = insert_skipping_taken(dialect, KEYS, ("client", "key"), "client")
    values = {"client": client, "key": scoped_key, "fingerprint": digest, "state": "in_flight", "created_at": utcnow()}
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, values).first() is not None
    with engine.begin() as connection:
        return connection.execute(statement, values).first() is not None


def claim(client: str, scoped_key: str, digest: str) -> Replay | None:
    """Mark the key in flight, or answer how its earlier use ended."""
    settings = get_settings()
    if _mark_in_flight(client, scoped_key, digest):
        return None
    maker = get_sessionmaker()
    with maker() as session, session.begin():
        record = session.get(IdempotencyRecord, (client, scoped_key), with_for_update=True)
        if record is None:  # released between our insert and this read: take it
            session.add(IdempotencyRecord(client=client, key=scoped_key, fingerprint=digest, state="in_flight", created_at=utcnow()))
            return None
        if record.fingerprint != digest:
            raise Unprocessable("This Idempotency-Key was already used with a different request body.")
        if record.state == DONE:
            return Replay(record.status_code or 200, record.body, dict(record.headers or {}))
        stale_before = utcnow() - timedelta(seconds=settings.idempotency_in_flight_seconds)
        if record.created_at > stale_before:
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        # The first attempt died without finishing: let this one take over.
        record.created_at = utcnow()
        return None


def _complete_statement():
    # Built once, and on the table rather than the entity: an ORM-enabled UPDATE built per call
    # cost more than the rest of a keyed intake.
    return (
        update(KEYS)
        .where(KEYS.c.client == bindparam("where_client"), KEYS.c.key == bindparam("where_key"))
        .values(
            state=DONE, status_code=bindparam("new_status_code", type_=KEYS.c.status_code.type),
            body=bindparam("new_body", type_=KEYS.c.body.type), headers=bindparam("new_headers", type_=KEYS.c.headers.type),
        )
    )


_COMPLETE = _complete_statement()


def complete(session: Session, client: str, scoped_key: str, status_code: int, body: Any, headers: dict[str, str]) -> None:
    session.execute(_COMPLETE, {
        "where_client": client, "where_key": scoped_key, "new_status_code": status_code, "new_body": body,
        "new_headers": headers,
    })


def key_unused() -> ColumnElement[bool]:
    """Whether the key idempotency_client, idempotency_key (parameters) is unused: the guard of
    a write that `done_part` records under that key, in the same PostgreSQL statement."""
    return ~exists().where(KEYS.c.client == bindparam("idempotency_client"), KEYS.c.key == bindparam("idempotency_key"))


def done_part(owner: ColumnElement) -> CTE:
    """`claim` and `complete` at once, as part of one PostgreSQL statement: a data-modifying CTE
    that records the key as done, with its answer, if `owner`'s CTE holds a row (what the key
    created, under `key_unused`). A key taken meanwhile by a concurrent first use makes this
    insert fail on the primary key, which aborts the whole statement: a key never gets two
    effects. Parameters: `done_values`."""
    answer = select(
        bindparam("idempotency_client"), bindparam("idempotency_key"), bindparam("idempotency_fingerprint"), literal(DONE),
        bindparam("idempotency_status_code"), cast(bindparam("idempotency_body"), JSON),
        cast(bindparam("idempotency_headers"), JSON), bindparam("idempotency_at"),
    ).select_from(owner.table)
    columns = ["client", "key", "fingerprint", "state", "status_code", "body", "headers", "created_at"]
    return insert(KEYS).from_select(columns, answer).cte("remembered")


def done_values(client: str, scoped_key: str, digest: str, status_code: int, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The parameters of `key_unused` and `done_part`: the body and headers as JSON text."""
    return {
        "idempotency_client": client, "idempotency_key": scoped_key, "idempotency_fingerprint": digest,
        "idempotency_status_code": status_code, "idempotency_body": json.dumps(body),
        "idempotency_headers": json.dumps(headers), "idempotency_at": utcnow(),
    }


def release(client: str, scoped_key: str) -> None:
    """Forget an in-flight key whose request failed, so the client may retry it."""
    with get_sessionmaker()() as session, session.begin():
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.client == client, IdempotencyRecord.key == scoped_key,
                IdempotencyRecord.state == "in_flight",
            )
        )


def lookup(session: Session, client: str, scoped_key: str) -> IdempotencyRecord | None:
    return session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.client == client, IdempotencyRecord.key == scoped_key))
