"""Intake's fast path on PostgreSQL (app/asyncdb.py): a new request without an Idempotency-Key
is stored by one autocommitted statement on the event loop; everything else goes through the
unit of work. The embedded pass checks that SQLite always takes the unit of work."""

from __future__ import annotations

import time
import uuid
from functools import partial

import pytest
from sqlalchemy import func, select, text

from tests.conftest import SERVICES
from tests.objects import hold_kinds, request_body

URL = "/v1/erasure-requests"
postgres_only = pytest.mark.skipif(not SERVICES, reason="services pass only (OBLIVIATE_TEST_DATABASE_URL)")


body = partial(request_body, "fast", identify=("email", "user_id"))


@pytest.fixture
def headers(client, make_key):
    made = make_key("requests:write,requests:read,requests:review")
    hold_kinds(client, made, "user_id")
    return made


@pytest.fixture
def unit_of_work_calls(monkeypatch):
    """How many times an endpoint ran its work in a UnitOfWork."""
    from app.deps import UnitOfWork

    calls = []
    original = UnitOfWork.run

    async def counting(self, work):
        calls.append(1)
        return await original(self, work)

    monkeypatch.setattr(UnitOfWork, "run", counting)
    return calls


def stored(request_id: str) -> tuple[int, int, int, int]:
    """(requests, subjects, audit events, audit heads) stored for one request id."""
    from app.audit.models import AuditEvent, AuditHead
    from app.db import session_scope
    from app.requests.models import ErasureRequest, RequestSubject

    rid, stream = uuid.UUID(request_id), f"request:{request_id}"
    with session_scope() as session:
        return (
            session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.id == rid)),
            session.scalar(select(func.count()).select_from(RequestSubject).where(RequestSubject.request_id == rid)),
            session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.stream == stream)),
            session.scalar(select(func.count()).select_from(AuditHead).where(AuditHead.stream == stream)),
        )


def test_a_plain_create_takes_the_fast_path_only_on_postgresql(client, headers, unit_of_work_calls):
    response = client.post(URL, json=body(external_id="fast-1"), headers=headers)
    assert response.status_code == 201, response.text
    assert len(unit_of_work_calls) == (0 if SERVICES else 1)
    request_id = response.json()["id"]
    assert response.headers["location"] == f"{URL}/{request_id}"
    assert stored(request_id) == (1, 2, 1, 1)
    trail = client.get(f"{URL}/{request_id}/audit", headers=headers).json()
    assert trail["chain_valid"] is True and [e["type"] for e in trail["events"]] == ["request.received"]
    # What the fast path answered is what a read of the stored row answers.
    read = client.get(f"{URL}/{request_id}", headers=headers).json()
    assert {k: v for k, v in read.items() if k != "progress"} == {k: v for k, v in response.json().items() if k != "progress"}


def test_taken_and_auto_approved_requests_use_the_unit_of_work(client, headers, settings_env, unit_of_work_calls):
    taken = body(external_id="taken-1")
    first = client.post(URL, json=taken, headers=headers)
    before = len(unit_of_work_calls)
    again = client.post(URL, json=taken, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert len(unit_of_work_calls) == before + 1

    settings_env(AUTO_APPROVE_VERIFIED="true")
    approved = client.post(URL, json=body(identity_verified=True), headers=headers)
    assert approved.status_code == 201 and approved.json()["status"] == "approved"
    assert len(unit_of_work_calls) == before + 2


def test_a_keyed_request_stores_its_answer_with_it(client, headers, unit_of_work_calls):
    """First use of a key: on PostgreSQL the request and the key's answer go in one statement.
    A replay, or the key with another body, is answered from what was stored."""
    from app.db import session_scope
    from app.idempotency.models import IdempotencyRecord

    keyed = {**headers, "Idempotency-Key": "fast-key-1"}
    sent = body()
    first = client.post(URL, json=sent, headers=keyed)
    assert first.status_code == 201, first.text
    assert len(unit_of_work_calls) == (0 if SERVICES else 1)
    assert stored(first.json()["id"]) == (1, 2, 1, 1)
    with session_scope() as session:
        record = session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.key == "create-request:fast-key-1")).one()
        assert (record.state, record.status_code, record.body) == ("done", 201, first.json())
        assert record.headers == {"Location": first.headers["location"]}

    replay = client.post(URL, json=sent, headers=keyed)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    reused = client.post(URL, json=body(), headers=keyed)
    assert reused.status_code == 422
    assert request_total() == 1


def request_total() -> int:
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(ErasureRequest))


def test_concurrent_duplicates_under_one_key_store_one_request(client, headers):
    """Two clients send the same keyed request at once, for many keys: each key ends with one
    request, and every answer is that request (201, or 409 while the other was in flight)."""
    from concurrent.futures import ThreadPoolExecutor

    sent = {f"race-{n}": body() for n in range(12)}

    def post(key):
        response = client.post(URL, json=sent[key], headers={**headers, "Idempotency-Key": key})
        return key, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(post, [key for key in sent for _twice in range(2)]))
    assert request_total() == len(sent)
    ids: dict[str, set] = {}
    for key, status, answer in answers:
        assert status in (201, 409), (status, answer)
        if status == 201:
            ids.setdefault(key, set()).add(answer["id"])
    assert all(len(found) == 1 for found in ids.values()), ids
    assert set(ids) == set(sent)  # at least one of each pair was answered 201


@postgres_only
def test_unreachable_database_answers_503_and_stores_nothing(client, headers, settings_env):
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    assert client.post(URL, json=body(), headers=headers).status_code == 201  # the key is now cached
    # A port nothing listens on: the fast path's pool cannot connect.
    settings_env(DATABASE_URL="postgresql://postgres@127.0.0.1:9/test", INTAKE_CONNECTION_TIMEOUT="0.5")
    started = time.monotonic()
    response = client.post(URL, json=body(external_id="unreachable-1"), headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "fast-" not in response.text and "postgres@" not in response.text
    assert time.monotonic() - started < 10
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.external_id == "unreachable-1")) == 0


@postgres_only
def test_connections_the_server_closed_are_replaced(client, headers):
    from app.db import get_engine

    assert client.post(URL, json=body(), headers=headers).status_code == 201
    with get_engine().connect() as connection:
        terminated = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )).scalar()
    assert terminated >= 1
    time.sleep(0.3)  # the termination notice reaches the pooled sockets
    for _ in range(3):
        response = client.post(URL, json=body(), headers=headers)
        assert response.status_code == 201, response.text
        assert stored(response.json()["id"]) == (1, 2, 1, 1)


def test_a_batch_renders_while_it_is_stored_and_reads_back_only_taken_ids(client, headers, unit_of_work_calls):
    # Repeats of an external_id name the same subject (another one would be a 409).
    held_body, new_body = body(external_id="batch-held"), body(external_id="batch-new-1")
    held = client.post(URL, json=held_body, headers=headers).json()["id"]
    before = len(unit_of_work_calls)
    items = [new_body, {"subject": "not an object"}, body(), new_body]
    response = client.post(f"{URL}/batch", json=items, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["existing"], answer["errors"]) == (2, 1, 1)
    assert [item["result"] for item in answer["items"]] == ["created", "error", "created", "existing"]
    assert answer["items"][3]["request"]["id"] == answer["items"][0]["request"]["id"]
    # Nothing was taken: on PostgreSQL no unit of work was needed.
    assert len(unit_of_work_calls) == before + (0 if SERVICES else 1)
    for item in (answer["items"][0], answer["items"][2]):
        assert stored(item["request"]["id"]) == (1, 2, 1, 1)

    again = client.post(f"{URL}/batch", json=[held_body, body()], headers=headers).json()
    assert [item["result"] for item in again["items"]] == ["existing", "created"]
    assert again["items"][0]["request"]["id"] == held
    assert again["items"][0]["request"]["external_id"] == "batch-held"
    assert len(unit_of_work_calls) == before + (1 if SERVICES else 2)  # the held id was read back


@postgres_only
def test_a_batch_with_an_unreachable_database_answers_503_and_stores_nothing(client, headers, settings_env):
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    assert client.post(URL, json=body(), headers=headers).status_code == 201
    settings_env(DATABASE_URL="postgresql://postgres@127.0.0.1:9/test", INTAKE_CONNECTION_TIMEOUT="0.5")
    response = client.post(f"{URL}/batch", json=[body(external_id="gone-1"), body(external_id="gone-2")], headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "fast-" not in response.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.external_id.in_(["gone-1", "gone-2"]))) == 0


def test_a_batch_in_several_chunks_answers_as_one(client, headers, monkeypatch, unit_of_work_calls):
    from app.requests import fast_intake

    monkeypatch.setattr(fast_intake, "BATCH_CHUNK", 3)
    held_body, repeated = body(external_id="chunk-held"), body(external_id="chunk-a")
    held = client.post(URL, json=held_body, headers=headers).json()["id"]
    items = [repeated, body(), body(), body(), {"jurisdiction": "gdpr"}, repeated, held_body, body()]
    answer = client.post(f"{URL}/batch", json=items, headers=headers).json()
    assert [item["result"] for item in answer["items"]] == [
        "created", "created", "created", "created", "error", "existing", "existing", "created",
    ]
    assert [item["index"] for item in answer["items"]] == list(range(len(items)))
    assert (answer["created"], answer["existing"], answer["errors"]) == (5, 2, 1)
    assert answer["items"][5]["request"]["id"] == answer["items"][0]["request"]["id"]
    assert answer["items"][6]["request"]["id"] == held
    for index in (0, 1, 2, 3, 7):
        assert stored(answer["items"][index]["request"]["id"]) == (1, 2, 1, 1)
    assert len({item["request"]["id"] for item in answer["items"] if "request" in item}) == 6


@postgres_only
def test_a_batch_failing_in_a_later_chunk_stores_nothing(client, headers, monkeypatch):
    import psycopg

    from app import asyncdb
    from app.db import session_scope
    from app.requests import fast_intake
    from app.requests.models import ErasureRequest

    monkeypatch.setattr(fast_intake, "BATCH_CHUNK", 2)
    real, calls = asyncdb.fetch_ids, []

    async def second_fails(live, statement, params):
        calls.append(1)
        if len(calls) == 2:
            raise psycopg.OperationalError("connection lost")
        return await real(live, statement, params)

    monkeypatch.setattr(asyncdb, "fetch_ids", second_fails)
    items = [body(external_id=f"atomic-{n}") for n in range(5)]
    response = client.post(f"{URL}/batch", json=items, headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert len(calls) == 2
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.external_id.like("atomic-%"))) == 0
    monkeypatch.setattr(asyncdb, "fetch_ids", real)
    retried = client.post(f"{URL}/batch", json=items, headers=headers).json()
    assert retried["created"] == 5


def a_payload(**overrides):
    from app.requests.schemas import ErasureRequestCreate

    return ErasureRequestCreate.model_validate(body(**overrides))


PRINCIPAL_ARGS = ("00000000-0000-0000-0000-0000000000aa", "acme", "parts", frozenset({"requests:write"}))


def test_every_parameter_of_the_statement_comes_from_the_domain_that_owns_its_part():
    """The statement is composed of the requests', the audit's and the idempotency service's
    parts, each with the values its own domain gives: together they bind every parameter the
    SQL names, none is left over, and no two domains give a value of the same name."""
    import re

    from app.audit import service as audit_service
    from app.idempotency import service as idempotency_service
    from app.keys.service import Principal
    from app.requests import intake, service

    principal = Principal(*PRINCIPAL_ARGS)
    for prepared, count, keyed in ((intake._ONE, 1, False), (intake._MANY, 3, False), (intake._ONE_KEYED, 1, True)):
        rows = [service.new_row(principal, a_payload(external_id=f"parts-{n}")) for n in range(count)]
        owners = None if count == 1 else [row["id"] for row, _keys in rows]
        parts = [
            intake.request_values(rows),
            audit_service.first_links_values([intake.received_event(principal, *row) for row in rows], owners),
        ]
        if keyed:
            parts.append(idempotency_service.done_values(principal.client, "create-request:k", "f" * 64, 201, {}, {}))
        names = [set(part) for part in parts]
        assert all(not (one & other) for index, one in enumerate(names) for other in names[index + 1:])
        named = set(re.findall(r"%\((\w+)\)s", prepared.sql))
        assert named == set().union(*names, prepared.constants)
        assert "%(" not in re.sub(r"%\((\w+)\)s", "", prepared.sql)  # every placeholder is a named one
        sql, params = (intake.postgres_statement_keyed(principal, *rows[0], "create-request:k", "f" * 64, (201, {}, {}))
                       if keyed else intake.postgres_statement(principal, rows))
        assert sql == prepared.sql and set(params) == named


@postgres_only
def test_the_statement_writes_what_the_unit_of_work_writes(client, monkeypatch):
    """For the same request, the composed statement stores the same request row, subjects,
    first audit link (to the hash) and chain head as the unit of work's own inserts
    (insert_requests, insert_subjects, audit start_chains); under a key, the same record as
    the unit of work's claim and complete."""
    from datetime import UTC, datetime

    from app.audit import service as audit_service
    from app.audit.models import AuditEvent, AuditHead
    from app.db import session_scope
    from app.idempotency import service as idempotency_service
    from app.idempotency.models import IdempotencyRecord
    from app.keys.service import Principal
    from app.requests import intake, service
    from app.requests.models import ErasureRequest, RequestSubject

    monkeypatch.setattr(audit_service, "utcnow", lambda: datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC))
    principal = Principal(*PRINCIPAL_ARGS)
    rows = [service.new_row(principal, a_payload(external_id="same-1", reason="moved away")),
            service.new_row(principal, a_payload())]
    keyed = service.new_row(principal, a_payload())
    scoped, digest, answer = "create-request:same", "e" * 64, (201, {"id": "x", "nested": [1, "ü"]}, {"Location": "/x"})

    def written(session, ids) -> list:
        requests = session.scalars(select(ErasureRequest).where(ErasureRequest.id.in_(ids)).order_by(ErasureRequest.id))
        subjects = session.scalars(select(RequestSubject).where(RequestSubject.request_id.in_(ids))
                                   .order_by(RequestSubject.request_id, RequestSubject.kind))
        streams = [audit_service.request_stream(request_id) for request_id in ids]
        events = session.scalars(select(AuditEvent).where(AuditEvent.stream.in_(streams)).order_by(AuditEvent.stream))
        heads = session.scalars(select(AuditHead).where(AuditHead.stream.in_(streams)).order_by(AuditHead.stream))
        keys = session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.key == scoped))
        found = []
        for kind, objects in (("request", requests), ("subject", subjects), ("event", events), ("head", heads), ("key", keys)):
            for obj in objects:
                columns = {c.name: getattr(obj, c.key) for c in obj.__table__.columns if c.name not in ("log_index", "created_at")}
                if kind == "event":
                    columns.pop("id")
                found.append((kind, columns))
        return found

    ids = [row["id"] for row, _keys in rows]
    outcomes = []
    for composed in (True, False):
        with session_scope() as session:
            if composed:
                assert intake.store_postgres(session, principal, rows) == set(ids)
                # Another request, under a key: only the key's record is compared.
                statement, params = intake.postgres_statement_keyed(principal, *keyed, scoped, digest, answer)
                cursor = session.connection().connection.cursor()
                intake.asyncdb.binary_arrays(cursor)
                cursor.execute(statement, params)
                assert len(cursor.fetchall()) == 1
            else:
                inserted = intake.insert_requests(session, [row for row, _keys in rows])
                assert inserted == set(ids)
                intake.insert_subjects(session, [{"request_id": row["id"], "kind": kind, "subject_key": key}
                                                 for row, keys in rows for kind, key in keys.items()])
                audit_service.start_chains(session, [intake.received_event(principal, *row) for row in rows])
                session.add(IdempotencyRecord(client=principal.client, key=scoped, fingerprint=digest, state="in_flight",
                                              created_at=datetime.now(UTC)))
                session.flush()
                idempotency_service.complete(session, principal.client, scoped, *answer)
            session.flush()
            outcomes.append(written(session, ids))
            session.rollback()
    composed, unit_of_work = outcomes
    assert [kind for kind, _columns in composed] == ["request"] * 2 + ["subject"] * 4 + ["event"] * 2 + ["head"] * 2 + ["key"]
    assert composed == unit_of_work
    for _kind, columns in composed[6:8]:
        assert audit_service.verify_chain(columns["stream"], [columns], (1, columns["hash"])).valid
