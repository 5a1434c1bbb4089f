"""One client's burst of lock-taking writes must not hang the API (issue 9, item 2).

Model creation takes the client's job-quota lock (an advisory lock on PostgreSQL, the write lock
on SQLite). Its commit used to run in a second threadpool call, which the requests waiting for
that lock held: every route, /healthz included, stopped answering and SIGTERM did not stop the
server. Now the lock is taken, used and released on one thread, one client's waiting writes are
bounded (429), a write waits for a lock at most a few seconds on PostgreSQL (503), and /healthz
and /metrics never need a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import SERVICES
from tests.objects import request_body
from tests.security.live_server import ANSWER_TIMEOUT, WRITE_TIMEOUT, LiveServer, database_for_pass

BURST, AT_ONCE = 200, 60


def _dataset_csv() -> bytes:
    rows = ["user_id,label,f1,f2"] + [f"u{i:03d},{i % 2},{i % 7}.5,{(i * 3) % 5}.25" for i in range(40)]
    return ("\n".join(rows) + "\n").encode()


async def _burst(base: str, writer: dict, reader: dict, dataset_id: str) -> tuple[list, list, list]:
    limits = httpx.Limits(max_connections=AT_ONCE + 10, max_keepalive_connections=AT_ONCE + 10)
    gate = asyncio.Semaphore(AT_ONCE)
    done = asyncio.Event()

    async with httpx.AsyncClient(base_url=base, timeout=WRITE_TIMEOUT, limits=limits) as http, \
            httpx.AsyncClient(base_url=base, timeout=ANSWER_TIMEOUT) as bystander:

        async def create(index: int) -> httpx.Response:
            async with gate:
                return await http.post("/v1/models", headers=writer, json={
                    "name": f"burst-{index}", "family": "logistic_regression", "dataset_id": dataset_id,
                })

        async def watch() -> tuple[list, list]:
            health, reads = [], []
            while not done.is_set():
                health.append((await bystander.get("/healthz")).status_code)
                reads.append((await bystander.get("/v1/models", headers=reader)).status_code)
                await asyncio.sleep(0.05)
            return health, reads

        watcher = asyncio.create_task(watch())
        try:
            answers = await asyncio.gather(*(create(i) for i in range(BURST)))
        finally:
            done.set()
        health, reads = await watcher
    return list(answers), health, reads


def test_a_burst_of_model_creations_from_one_key_leaves_the_api_answering(tmp_path, request):
    with LiveServer(tmp_path, database_url=database_for_pass(request)) as server:
        writer = server.key("models:write,models:read", client="burst")
        reader = server.key("models:read", client="bystander")
        uploaded = httpx.post(
            f"{server.base}/v1/datasets", headers=writer, timeout=ANSWER_TIMEOUT,
            data={"name": "burst-data", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "label"},
            files={"file": ("data.csv", _dataset_csv(), "text/csv")},
        )
        assert uploaded.status_code == 201, uploaded.text

        answers, health, reads = asyncio.run(_burst(server.base, writer, reader, uploaded.json()["dataset_id"]))

        codes = [answer.status_code for answer in answers]
        assert set(codes) <= {202, 429, 503}, sorted(set(codes))
        assert 202 in codes and 429 in codes
        for answer in answers:
            if answer.status_code in (429, 503):
                assert answer.headers["content-type"].startswith("application/problem+json")
                assert answer.headers["retry-after"].isdigit()
        assert health and set(health) == {200}
        assert reads and set(reads) == {200}
        assert server.stop() == 0, server.tail()


async def _review_burst(base: str, reviewer: dict, request_id: str) -> tuple[list[int], list[int]]:
    """Holds and releases of one request at once: each locks the request's row and its audit
    chain's head (FOR UPDATE) until it commits."""
    gate = asyncio.Semaphore(AT_ONCE)
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=WRITE_TIMEOUT) as http, \
            httpx.AsyncClient(base_url=base, timeout=ANSWER_TIMEOUT) as bystander:

        async def review(index: int) -> int:
            async with gate:
                action = ("hold", {"reason": "burst"}) if index % 2 == 0 else ("release", None)
                answer = await http.post(f"/v1/erasure-requests/{request_id}/{action[0]}", headers=reviewer, json=action[1])
                return answer.status_code

        async def watch() -> list[int]:
            health = []
            while not done.is_set():
                health.append((await bystander.get("/healthz")).status_code)
                await asyncio.sleep(0.05)
            return health

        watcher = asyncio.create_task(watch())
        try:
            codes = await asyncio.gather(*(review(i) for i in range(BURST)))
        finally:
            done.set()
        return list(codes), await watcher


def test_a_burst_of_review_actions_on_one_request_leaves_the_api_answering(tmp_path, request):
    with LiveServer(tmp_path, database_url=database_for_pass(request)) as server:
        reviewer = server.key("requests:write,requests:read,requests:review", client="reviewer")
        created = httpx.post(f"{server.base}/v1/erasure-requests", headers=reviewer, timeout=ANSWER_TIMEOUT,
                             json=request_body(identifiers={"email": "burst-subject@example.org"}))
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]

        codes, health = asyncio.run(_review_burst(server.base, reviewer, request_id))

        # 409: a hold of a held request, a release of a released one.
        assert set(codes) <= {200, 409, 429, 503}, sorted(set(codes))
        assert 200 in codes
        assert health and set(health) == {200}
        trail = httpx.get(f"{server.base}/v1/erasure-requests/{request_id}/audit", headers=reviewer, timeout=ANSWER_TIMEOUT)
        assert trail.json()["chain_valid"] is True
        assert len(trail.json()["events"]) == 1 + codes.count(200)
        assert server.stop() == 0, server.tail()


def test_waiting_writes_are_bounded_per_client_across_threads():
    from app.errors import TooManyRequests
    from app.routing import ClientSlots

    writes = ClientSlots("writes")
    holding, release = threading.Barrier(3), threading.Event()
    refused: list[str] = []

    def hold() -> None:
        with writes.slot("burst", 2):
            holding.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait()
    try:
        with writes.slot("burst", 2):
            pass
    except TooManyRequests as exc:
        refused.append(exc.headers["Retry-After"])
    with writes.slot("bystander", 2):
        pass  # another client is not affected
    release.set()
    for thread in threads:
        thread.join()
    assert refused == ["1"]
    with writes.slot("burst", 2):
        pass  # the slots came back


def test_every_session_route_commits_on_the_endpoints_thread(app):
    """The class of the bug: no route may use the request session and commit in another call."""
    import inspect

    from fastapi.routing import APIRoute

    from app.deps import get_session

    def walk(routes):
        for route in routes:
            if hasattr(route, "original_router"):
                yield from walk(route.original_router.routes)
            else:
                yield route

    def uses_session(dependant) -> bool:
        return any(d.call is get_session or uses_session(d) for d in dependant.dependencies)

    routes = [route for route in walk(app.routes) if isinstance(route, APIRoute)]
    with_session = [route for route in routes if uses_session(route.dependant)]
    assert len(with_session) > 20
    for route in with_session:
        assert getattr(route.endpoint, "unit_of_work", False), f"{route.path} commits outside its endpoint's thread"
    for route in routes:
        if route.path in ("/healthz", "/metrics"):
            assert inspect.iscoroutinefunction(route.endpoint), route.path


@pytest.mark.skipif(not SERVICES, reason="lock_timeout is PostgreSQL's")
def test_a_write_waiting_past_the_lock_timeout_is_503_with_retry_after(client, make_key, settings_env):
    from app.db import get_engine

    settings_env(WRITE_LOCK_TIMEOUT_SECONDS="0.5")
    writer = make_key("models:write,models:read", client="locked")
    dataset = client.post(
        "/v1/datasets", headers=writer,
        data={"name": "locked-data", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "label"},
        files={"file": ("data.csv", _dataset_csv(), "text/csv")},
    ).json()["dataset_id"]
    digest = hashlib.sha256(b"obliviate:job-quota:locked").digest()
    with get_engine().connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest[:8], "big", signed=True)})
        answer = client.post("/v1/models", headers=writer, json={
            "name": f"locked-{uuid.uuid4().hex[:6]}", "family": "logistic_regression", "dataset_id": dataset,
        })
        holder.rollback()
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "busy" in answer.json()["detail"]
