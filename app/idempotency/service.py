"""Idempotency-Key handling (DESIGN §5).

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

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import get_engine, get_sessionmaker, utcnow
from app.errors import BadRequest, Conflict, Unprocessable
from app.idempotency.models import IdempotencyRecord
from app.pii import find_identifier

MAX_KEY_LENGTH = 255


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


_INSERT_MARKERS: dict[str, Any] = {}


def _mark_in_flight(client: str, scoped_key: str, digest: str) -> bool:
    """Insert the in-flight marker and commit it at once; False if the key is taken. On
    PostgreSQL one autocommitted statement (one round trip instead of three, on every keyed
    request); SQLite has no round trips to save."""
    engine = get_engine()
    dialect = engine.dialect.name
    statement = _INSERT_MARKERS.get(dialect)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = IdempotencyRecord.__table__
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=["client", "key"]).returning(table.c.client)
        _INSERT_MARKERS[dialect] = statement
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
        if record.state == "done":
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
    table = IdempotencyRecord.__table__
    return (
        update(table)
        .where(table.c.client == bindparam("where_client"), table.c.key == bindparam("where_key"))
        .values(
            state="done", status_code=bindparam("new_status_code", type_=table.c.status_code.type),
            body=bindparam("new_body", type_=table.c.body.type), headers=bindparam("new_headers", type_=table.c.headers.type),
        )
    )


_COMPLETE = _complete_statement()


def complete(session: Session, client: str, scoped_key: str, status_code: int, body: Any, headers: dict[str, str]) -> None:
    session.execute(_COMPLETE, {
        "where_client": client, "where_key": scoped_key, "new_status_code": status_code, "new_body": body,
        "new_headers": headers,
    })


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
