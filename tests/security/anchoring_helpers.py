"""Shared by the anchoring and certificate tests: a database of one's own, a small log, a
certificate, and the moves of an attacker who owns the tables."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

from sqlalchemy import select, text
from typer.testing import CliRunner

from tests.conftest import SERVICES, TEST_DB_URL
from tests.objects import approve, hold_kinds, request_body

URL = "/v1/erasure-requests"
REVIEWER = "requests:write,requests:read,requests:review"


@contextmanager
def own_database(monkeypatch, tmp_path, **settings):
    """Point the settings at a fresh, migrated database (attacks below drop triggers for good)
    and checkpoints published under tmp_path/published."""
    from app import config, db, migrate
    from app.keys.service import clear_cache

    name = None
    if SERVICES:
        url, name = db.create_scratch_database(TEST_DB_URL, "obliviate_anchor")
    else:
        url = f"sqlite:///{tmp_path / 'anchor.db'}"
    monkeypatch.setenv("OBLIVIATE_DATABASE_URL", url)
    monkeypatch.setenv("OBLIVIATE_CHECKPOINT_DIR", str(tmp_path / "published"))
    for key, value in settings.items():
        monkeypatch.setenv(f"OBLIVIATE_{key}", value)
    config.reset_settings()
    db.dispose_engine()
    clear_cache()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        db.dispose_engine()
        monkeypatch.undo()
        config.reset_settings()
        clear_cache()
        if name:
            db.drop_database(TEST_DB_URL, name)


def api_client():
    from fastapi.testclient import TestClient

    from app.main import create_app

    return TestClient(create_app(), raise_server_exceptions=False)


def key(scopes: str = REVIEWER, client: str = "acme") -> dict[str, str]:
    from app.db import session_scope
    from app.keys import service

    with session_scope() as session:
        _key, plaintext = service.create_key(session, f"{client}-{uuid.uuid4().hex[:6]}", scopes.split(","), client=client)
    return {"Authorization": f"Bearer {plaintext}"}


def build_log(client, headers, requests: int = 4) -> list[str]:
    ids = []
    for index in range(requests):
        body = request_body(identifiers={"email": f"anchor-{uuid.uuid4().hex[:8]}-{index}@example.org"})
        rid = client.post(URL, json=body, headers=headers).json()["id"]
        assert client.post(f"{URL}/{rid}/hold", json={"reason": "identity check"}, headers=headers).status_code == 200
        assert client.post(f"{URL}/{rid}/release", headers=headers).status_code == 200
        ids.append(rid)
    return ids


def certified_request(client, headers) -> str:
    """A request completed with a certificate: approved, and planned with no data found."""
    from app.db import session_scope
    from app.unlearning import planner

    hold_kinds(client, headers, "email")
    body = request_body("cert")
    rid = client.post(URL, json=body, headers=headers).json()["id"]
    assert approve(client, headers, rid).status_code == 200
    with session_scope() as session:
        planner.plan_approved(session)
    assert client.get(f"{URL}/{rid}", headers=headers).json()["status"] == "completed"
    return rid


def cli(*args: str):
    from app.cli import cli as command

    return CliRunner().invoke(command, list(args))


def drop_every_trigger(connection) -> None:
    """What the tables' owner can do, with no superuser needed."""
    if SERVICES:
        triggers = connection.execute(text(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname LIKE 'audit%'"
        )).all()
        for trigger, table in triggers:
            connection.execute(text(f'DROP TRIGGER "{trigger}" ON "{table}"'))
    else:
        for (trigger,) in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
            connection.execute(text(f'DROP TRIGGER "{trigger}"'))


def rewrite_chain(connection, stream: str) -> None:
    """Change the second event's data and recompute every hash after it, and the head."""
    from app.audit.chain import event_hash
    from app.audit.models import AuditEvent, AuditHead

    table = AuditEvent.__table__
    events = connection.execute(select(table).where(table.c.stream == stream).order_by(table.c.seq)).mappings().all()
    prev = events[0]["hash"]
    for event in events[1:]:
        data = {**event["data"], "reason": "nothing happened"} if event["seq"] == 2 else event["data"]
        digest = event_hash(prev, stream, event["seq"], event["type"], event["at"], event["actor"], data)
        connection.execute(table.update().where(table.c.id == event["id"]).values(data=data, prev_hash=prev, hash=digest))
        prev = digest
    heads = AuditHead.__table__
    connection.execute(heads.update().where(heads.c.stream == stream).values(hash=prev))


def truncate_and_fix_head(connection, stream: str) -> None:
    from app.audit.models import AuditEvent, AuditHead

    table, heads = AuditEvent.__table__, AuditHead.__table__
    events = connection.execute(select(table).where(table.c.stream == stream).order_by(table.c.seq)).mappings().all()
    connection.execute(table.delete().where(table.c.id == events[-1]["id"]))
    connection.execute(heads.update().where(heads.c.stream == stream).values(seq=events[-2]["seq"], hash=events[-2]["hash"]))


def delete_chain(connection, stream: str) -> None:
    from app.audit.models import AuditEvent, AuditHead

    connection.execute(AuditEvent.__table__.delete().where(AuditEvent.__table__.c.stream == stream))
    connection.execute(AuditHead.__table__.delete().where(AuditHead.__table__.c.stream == stream))
