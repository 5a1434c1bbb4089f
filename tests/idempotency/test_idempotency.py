"""The Idempotency-Key matrix: replay, mismatch, in flight, stale, limits, clients, batch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import select

from tests import objects
from tests.factories import request_count

URL = "/v1/erasure-requests"


request_body = partial(objects.request_body, "idem", identify=("email",))


def records() -> list[tuple[str, str, str]]:
    from app.db import session_scope
    from app.idempotency.models import IdempotencyRecord

    with session_scope() as session:
        return sorted(session.execute(select(IdempotencyRecord.client, IdempotencyRecord.key, IdempotencyRecord.state)).all())


def plant_in_flight(client_name: str, key: str, body: dict, age: timedelta) -> None:
    """An in-flight marker as a first attempt still running (or dead) would have left it."""
    from app.db import session_scope
    from app.idempotency.models import IdempotencyRecord
    from app.idempotency.service import fingerprint
    from app.requests.schemas import ErasureRequestCreate

    digest = fingerprint(ErasureRequestCreate.model_validate(body).model_dump(mode="json"))
    with session_scope() as session:
        session.add(IdempotencyRecord(
            client=client_name, key=f"create-request:{key}", fingerprint=digest, state="in_flight",
            created_at=datetime.now(UTC) - age,
        ))


def test_same_key_and_body_replays_the_first_response(client, headers):
    body = request_body(external_id="idem-1")
    key = {"Idempotency-Key": "replay-1", **headers}
    first = client.post(URL, json=body, headers=key)
    second = client.post(URL, json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["location"] == first.headers["location"]
    assert request_count() == 1
    assert records() == [("acme", "create-request:replay-1", "done")]
    trail = client.get(f"{URL}/{first.json()['id']}/audit", headers=headers).json()
    assert len(trail["events"]) == 1


def test_replay_keeps_the_original_response_after_the_request_changed(client, headers):
    body = request_body()
    key = {"Idempotency-Key": "replay-2", **headers}
    first = client.post(URL, json=body, headers=key)
    assert objects.approve(client, headers, first.json()['id']).status_code == 200
    second = client.post(URL, json=body, headers=key)
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.json()["status"] == "received"


def test_same_key_with_another_body_is_refused(client, headers):
    key = {"Idempotency-Key": "mismatch-1", **headers}
    first = client.post(URL, json=request_body(), headers=key)
    assert first.status_code == 201
    other = client.post(URL, json=request_body(), headers=key)
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert request_count() == 1
    again = client.post(URL, json=request_body(jurisdiction="ccpa"), headers=key)
    assert again.status_code == 422


def test_first_request_still_in_flight_answers_409(client, headers):
    body = request_body()
    plant_in_flight("acme", "busy-1", body, age=timedelta(seconds=1))
    response = client.post(URL, json=body, headers={"Idempotency-Key": "busy-1", **headers})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "retry-after" in response.headers
    assert request_count() == 0
    assert records() == [("acme", "create-request:busy-1", "in_flight")]


def test_in_flight_key_of_another_client_does_not_block(client, make_key):
    body = request_body()
    plant_in_flight("other-client", "busy-2", body, age=timedelta(seconds=1))
    response = client.post(URL, json=body, headers={"Idempotency-Key": "busy-2", **make_key(client="acme")})
    assert response.status_code == 201


def test_stale_in_flight_marker_is_taken_over(client, headers):
    from app.config import get_settings

    body = request_body()
    stale = timedelta(seconds=get_settings().idempotency_in_flight_seconds + 30)
    plant_in_flight("acme", "dead-1", body, age=stale)
    key = {"Idempotency-Key": "dead-1", **headers}
    response = client.post(URL, json=body, headers=key)
    assert response.status_code == 201, response.text
    assert records() == [("acme", "create-request:dead-1", "done")]
    replay = client.post(URL, json=body, headers=key)
    assert replay.status_code == 201 and replay.json() == response.json()
    assert request_count() == 1


def test_in_flight_window_follows_the_setting(client, headers, settings_env):
    settings_env(IDEMPOTENCY_IN_FLIGHT_SECONDS="5")
    body = request_body()
    plant_in_flight("acme", "dead-2", body, age=timedelta(seconds=10))
    assert client.post(URL, json=body, headers={"Idempotency-Key": "dead-2", **headers}).status_code == 201


@pytest.mark.parametrize(("key", "status"), [("k" * 255, 201), ("k" * 256, 400), ("x" * 4000, 400), (" ", 400)])
def test_key_length_limits(client, headers, key, status):
    response = client.post(URL, json=request_body(), headers={"Idempotency-Key": key, **headers})
    assert response.status_code == status, response.text
    if status == 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert request_count() == 0
        assert records() == []


def test_same_key_from_two_clients_does_not_collide(client, make_key):
    acme, beta = make_key(client="acme"), make_key(client="beta")
    body = request_body()
    mine = client.post(URL, json=body, headers={"Idempotency-Key": "shared", **acme})
    theirs = client.post(URL, json=body, headers={"Idempotency-Key": "shared", **beta})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert request_count() == 2
    # beta's key did not become a mismatch for acme
    other_body = request_body()
    assert client.post(URL, json=other_body, headers={"Idempotency-Key": "shared", **beta}).status_code == 422
    assert client.post(URL, json=body, headers={"Idempotency-Key": "shared", **acme}).json()["id"] == mine.json()["id"]


def test_invalid_body_does_not_use_up_the_key(client, headers):
    key = {"Idempotency-Key": "after-invalid", **headers}
    bad = client.post(URL, json=request_body(jurisdiction="mars"), headers=key)
    assert bad.status_code == 422
    good = client.post(URL, json=request_body(), headers=key)
    assert good.status_code == 201


def test_without_a_key_each_post_creates(client, headers):
    body = request_body()
    assert client.post(URL, json=body, headers=headers).status_code == 201
    assert client.post(URL, json=body, headers=headers).status_code == 201
    assert request_count() == 2
    assert records() == []


def test_batch_honours_idempotency_keys(client, headers):
    items = [request_body(), request_body(), request_body(external_id="batch-idem")]
    key = {"Idempotency-Key": "batch-1", **headers}
    first = client.post(f"{URL}/batch", json=items, headers=key)
    assert first.status_code == 200, first.text
    assert first.json()["created"] == 3
    second = client.post(f"{URL}/batch", json=items, headers=key)
    assert second.status_code == 200
    assert second.content == first.content
    assert request_count() == 3
    mismatch = client.post(f"{URL}/batch", json=items[:2], headers=key)
    assert mismatch.status_code == 422
    assert request_count() == 3


def test_one_key_on_two_routes_is_two_keys(client, headers):
    key = {"Idempotency-Key": "both-routes", **headers}
    assert client.post(URL, json=request_body(), headers=key).status_code == 201
    batch = client.post(f"{URL}/batch", json=[request_body()], headers=key)
    assert batch.status_code == 200 and batch.json()["created"] == 1
    assert request_count() == 2


def _post_at_once(client, body, headers, times: int = 8) -> list:
    """`times` identical POSTs, released together by a barrier."""
    barrier = threading.Barrier(times)

    def post(_):
        barrier.wait()
        return client.post(URL, json=body, headers=headers)

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(post, range(times)))


def test_concurrent_retries_with_one_key_create_one_request(client, headers):
    body = request_body()
    key = {"Idempotency-Key": "race-1", **headers}
    responses = _post_at_once(client, body, key)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    assert request_count() == 1
    assert client.post(URL, json=body, headers=key).status_code == 201


def test_concurrent_posts_of_one_external_id_create_one_request(client, headers):
    body = request_body(external_id="race-ext")
    responses = _post_at_once(client, body, headers)
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert request_count() == 1
