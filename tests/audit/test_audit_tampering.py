"""Audit tampering at scale.

A log of many hash chains (60 erasure requests, 2 to 6 events each) is tampered with 1,000 times,
directly in the database and past the append-only triggers, as a superuser could: an edited field
(data, actor, type, at, prev_hash, hash), a deleted event, two events of a chain swapped, or a
chain's tail dropped (the audit_heads row, which records each chain's last link, is left as it
was: it is what reveals a dropped tail). Each tampering is applied to the untouched log inside a
transaction, checked with `app.audit.service.verify_all` (the code behind `obliviate audit verify`
and GET /v1/audit/verify) on that same connection, and rolled back. Every one must be detected,
at the chain that was touched; the untouched log must verify clean before, in between and after.
A few tamperings are committed, so that the CLI and the API see them too, and then restored."""

from __future__ import annotations

import random
import re
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.conftest import drop_sqlite_guards, restore_sqlite_guards
from tests.objects import OVERRIDE, request_body

TRIALS = 1000
REQUESTS = 60
SEED = 20261127
REVIEWER = "requests:write,requests:read,requests:review"
# Each a legal path through the lifecycle; together 2 to 6 events per chain.
PATHS = [
    [("extend", {"days": 14, "reason": "complex request"}), ("hold", {"reason": "identity check"}), ("release", None),
     ("approve", OVERRIDE), ("cancel", None)],
    [("hold", {"reason": "identity check"}), ("deny", {"reason": "not verified"})],
    [("approve", OVERRIDE), ("hold", {"reason": "legal hold"}), ("release", None),
     ("extend", {"days": 30, "reason": "backlog"})],
    [("extend", {"days": 5, "reason": "more time"})],
    [("approve", OVERRIDE), ("cancel", None)],
    [("hold", {"reason": "a"}), ("release", None), ("hold", {"reason": "b"}), ("release", None),
     ("deny", {"reason": "c"})],
]
FIELDS = ("data", "actor", "type", "at", "prev_hash", "hash")
KINDS = ("edit", "delete", "reorder", "truncate")


def _events_table():
    from app.audit.models import AuditEvent

    return AuditEvent.__table__


@pytest.fixture
def log(client, make_key) -> dict[str, list[dict]]:
    """Build the log over the API; return its events by stream, in seq order."""
    headers = make_key(REVIEWER, client="acme")
    for index in range(REQUESTS):
        body = request_body(identifiers={"email": f"tamper-{index}@example.org"})
        created = client.post("/v1/erasure-requests", json=body, headers=headers)
        assert created.status_code == 201, created.text
        for action, payload in PATHS[index % len(PATHS)]:
            moved = client.post(f"/v1/erasure-requests/{created.json()['id']}/{action}", json=payload, headers=headers)
            assert moved.status_code == 200, (action, moved.text)
    return _snapshot()


def _snapshot() -> dict[str, list[dict]]:
    from app.db import get_engine

    table = _events_table()
    chains: dict[str, list[dict]] = {}
    with get_engine().connect() as connection:
        for row in connection.execute(select(table).order_by(table.c.stream, table.c.seq)).mappings():
            chains.setdefault(row["stream"], []).append(dict(row))
    return chains


@contextmanager
def _unguarded(commit: bool = False):
    """A connection in a transaction where the append-only triggers do not fire. Rolled back on
    exit, unless `commit`: then committed, with the triggers in place again."""
    from app.db import get_engine

    engine = get_engine()
    sqlite = engine.dialect.name != "postgresql"
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if sqlite:
                # SQLite DDL is transactional: a rollback puts the triggers back.
                drop_sqlite_guards(connection)
            else:
                connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield connection
            if commit:
                if sqlite:
                    restore_sqlite_guards(connection)
                transaction.commit()
        finally:
            if transaction.is_active:
                transaction.rollback()


def _verify(connection) -> dict[str, tuple]:
    """verify_all on this connection (inside its transaction): stream → (valid, seq, problem) for broken chains."""
    from app.audit.service import verify_all

    session = Session(bind=connection)
    try:
        return {
            stream: (result.valid, result.broken_at_seq, result.problem)
            for stream, result in verify_all(session) if not result.valid
        }
    finally:
        session.close()


def _changed(field: str, event: dict, rng: random.Random):
    value = event[field]
    if field == "data":
        choice = rng.randrange(3)
        data = dict(value)
        if choice == 0 and data:
            key = rng.choice(sorted(data))
            data[key] = f"forged-{rng.randrange(10**6)}"
        elif choice == 1 and data:
            data.pop(rng.choice(sorted(data)))
        else:
            data[f"added_{rng.randrange(1000)}"] = rng.choice([True, 0, "x", None, [1], {"k": "v"}])
        return data
    if field == "at":
        return value + timedelta(seconds=rng.choice([-1, 1]) * rng.randint(1, 10**6), microseconds=rng.randint(0, 999))
    if field in ("prev_hash", "hash"):
        position = rng.randrange(64)
        flipped = format((int(value[position], 16) + rng.randint(1, 15)) % 16, "x")
        return value[:position] + flipped + value[position + 1:]
    options = [f"{value}-forged", value.upper() if value != value.upper() else value.lower(), "system", "key:0",
               "request.approved", "request.completed", value + " "]
    return rng.choice([option for option in options if option != value])


def _tamper(connection, chains: dict[str, list[dict]], rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """One random tampering (of `kind`, or a random kind) of the untouched log; returns
    (description, stream)."""
    table = _events_table()
    kind = kind or rng.choice(KINDS)
    candidates = [s for s, events in chains.items() if len(events) >= 2] if kind == "reorder" else list(chains)
    stream = rng.choice(candidates)
    events = chains[stream]
    if kind == "edit":
        event = rng.choice(events)
        field = rng.choice(FIELDS)
        new = _changed(field, event, rng)
        assert new != event[field]
        connection.execute(update(table).where(table.c.id == event["id"]).values({field: new}))
        return f"edit {field} of seq {event['seq']}", stream
    if kind == "delete":
        event = rng.choice(events)
        connection.execute(delete(table).where(table.c.id == event["id"]))
        return f"delete seq {event['seq']}", stream
    if kind == "reorder":
        first, second = rng.sample(events, 2)
        # Through a free seq: (stream, seq) is unique.
        connection.execute(update(table).where(table.c.id == first["id"]).values(seq=-1))
        connection.execute(update(table).where(table.c.id == second["id"]).values(seq=first["seq"]))
        connection.execute(update(table).where(table.c.id == first["id"]).values(seq=second["seq"]))
        return f"swap seq {first['seq']} and {second['seq']}", stream
    keep = rng.randrange(len(events))
    connection.execute(delete(table).where(table.c.stream == stream, table.c.seq > keep))
    return f"truncate after seq {keep} of {len(events)}", stream


def test_every_tampering_is_detected_and_the_untouched_log_verifies(log):
    # One chain per request, and the chain of the key that made them.
    assert len([s for s in log if s.startswith("request:")]) == REQUESTS == len(log) - 1
    assert sum(len(events) for events in log.values()) >= 3 * REQUESTS
    with _unguarded() as connection:
        assert _verify(connection) == {}, "false alarm on the untouched log"

    rng = random.Random(SEED)
    kinds: dict[str, int] = {}
    missed = []
    for trial in range(TRIALS):
        with _unguarded() as connection:
            description, stream = _tamper(connection, log, rng)
            broken = _verify(connection)
        kinds[description.split()[0]] = kinds.get(description.split()[0], 0) + 1
        if set(broken) != {stream}:
            missed.append((trial, stream, description, broken))
        if trial % 250 == 0:
            with _unguarded() as connection:
                assert _verify(connection) == {}, f"the log changed after trial {trial}"
    assert not missed, f"{len(missed)} of {TRIALS} tamperings not detected (or detected elsewhere): {missed[:5]}"
    assert set(kinds) == {"edit", "delete", "swap", "truncate"} and min(kinds.values()) > TRIALS // 8, kinds
    assert _snapshot() == log
    with _unguarded() as connection:
        assert _verify(connection) == {}


def _restore(chains: dict[str, list[dict]]) -> None:
    """Put the snapshot back: every event row as it was."""
    table = _events_table()
    with _unguarded(commit=True) as connection:
        connection.execute(delete(table))
        connection.execute(insert(table), [event for events in chains.values() for event in events])


def test_cli_and_api_report_committed_tampering_and_pass_after_restore(log, client, make_key):
    from app.cli import cli

    runner = CliRunner()
    admin = make_key("admin", client="operators")
    # Creating the admin key began its audit chain: the log to restore includes it.
    log = _snapshot()
    requests_only = {stream: events for stream, events in log.items() if stream.startswith("request:")}
    clean = runner.invoke(cli, ["audit", "verify"])
    assert clean.exit_code == 0, clean.output
    assert client.get("/v1/audit/verify", headers=admin).json()["valid"] is True

    rng = random.Random(SEED + 1)
    for kind in KINDS:
        with _unguarded(commit=True) as connection:
            description, stream = _tamper(connection, requests_only, rng, kind)
        try:
            result = runner.invoke(cli, ["audit", "verify"])
            assert result.exit_code == 1, (description, result.output)
            assert stream in result.stdout, description
            report = client.get("/v1/audit/verify", headers=admin).json()
            assert report["valid"] is False and [b["stream"] for b in report["broken"]] == [stream], description
            trail = client.get(f"/v1/erasure-requests/{stream.split(':', 1)[1]}/audit", headers=admin).json()
            assert trail["chain_valid"] is False, description
        finally:
            _restore(log)
        after = runner.invoke(cli, ["audit", "verify"])
        assert after.exit_code == 0, (description, after.output)
        assert re.search(rf"│\s*{len(log)}\s*│", after.stdout), after.stdout
    assert _snapshot() == log
    # The append-only guard is back after the committed tamperings.
    from app.db import get_engine

    table = _events_table()
    with pytest.raises(Exception), get_engine().begin() as connection:
        connection.execute(update(table).where(table.c.seq == 1).values(actor="after-restore"))
