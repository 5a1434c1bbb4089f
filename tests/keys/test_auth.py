"""Bearer keys, scopes, and tenant isolation (BOLA)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from functools import partial

import pytest
from sqlalchemy import select, update

from tests import objects
from tests.factories import assert_problem

URL = "/v1/erasure-requests"
REVIEW_BODIES = {
    "approve": objects.OVERRIDE, "cancel": None, "release": None,
    "deny": {"reason": "r"}, "hold": {"reason": "r"}, "extend": {"days": 3, "reason": "r"},
}


request_body = partial(objects.request_body, "auth")


ENDPOINTS = [
    ("GET", URL, None),
    ("POST", URL, request_body()),
    ("POST", f"{URL}/batch", [request_body()]),
    ("GET", f"{URL}/{uuid.uuid4()}", None),
    ("GET", f"{URL}/{uuid.uuid4()}/audit", None),
    ("POST", f"{URL}/{uuid.uuid4()}/approve", None),
    ("POST", f"{URL}/{uuid.uuid4()}/extend", {"days": 3, "reason": "r"}),
    ("GET", "/v1/audit/verify", None),
]


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer obl_not-a-real-key",
    "Bearer not-even-the-prefix", "Token obl_x", "Bearer " + "obl_" + "a" * 500,
])
def test_missing_or_invalid_key_is_401(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in ENDPOINTS:
        response = client.request(method, path, json=body, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].lower().startswith("bearer"), (method, path)


def test_valid_key_in_another_case_of_scheme_is_accepted(client, headers):
    token = headers["Authorization"].split(" ", 1)[1]
    assert client.get(URL, headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_keys_are_stored_hashed(client, make_key):
    from app.db import session_scope
    from app.keys.models import ApiKey

    token = make_key("requests:read")["Authorization"].split(" ", 1)[1]
    with session_scope() as session:
        rows = session.scalars(select(ApiKey)).all()
    assert len(rows) == 1
    stored = rows[0]
    assert stored.key_hash == hashlib.sha256(token.encode()).hexdigest()
    for column in ApiKey.__table__.columns:
        assert token not in str(getattr(stored, column.key))


@pytest.mark.parametrize(("scopes", "method", "path", "body"), [
    ("requests:read", "POST", URL, request_body()),
    ("requests:read", "POST", f"{URL}/batch", [request_body()]),
    ("requests:write", "GET", URL, None),
    ("requests:write", "GET", f"{URL}/{uuid.uuid4()}", None),
    ("requests:write", "GET", f"{URL}/{uuid.uuid4()}/audit", None),
    ("requests:read,requests:write", "POST", f"{URL}/{uuid.uuid4()}/approve", None),
    ("requests:read,requests:write", "POST", f"{URL}/{uuid.uuid4()}/deny", {"reason": "r"}),
    ("requests:read,requests:write", "POST", f"{URL}/{uuid.uuid4()}/extend", {"days": 3, "reason": "r"}),
    ("requests:read,requests:write,requests:review", "GET", "/v1/audit/verify", None),
    ("models:read,models:write", "GET", URL, None),
])
def test_missing_scope_is_403(client, make_key, scopes, method, path, body):
    response = client.request(method, path, json=body, headers=make_key(scopes))
    assert_problem(response, 403)


def test_forbidden_review_leaves_the_request_alone(client, make_key):
    writer = make_key("requests:write,requests:read")
    rid = client.post(URL, json=request_body(), headers=writer).json()["id"]
    assert_problem(objects.approve(client, writer, rid), 403)
    assert client.get(f"{URL}/{rid}", headers=writer).json()["status"] == "received"
    assert len(client.get(f"{URL}/{rid}/audit", headers=writer).json()["events"]) == 1


def test_other_clients_request_looks_missing(client, make_key):
    alice, bob = make_key(client="alice"), make_key(client="bob")
    rid = client.post(URL, json=request_body(external_id="a-1"), headers=alice).json()["id"]
    missing = str(uuid.uuid4())

    for suffix in ("", "/audit"):
        theirs = client.get(f"{URL}/{rid}{suffix}", headers=bob)
        absent = client.get(f"{URL}/{missing}{suffix}", headers=bob)
        assert_problem(theirs, 404)
        assert theirs.json() == assert_problem(absent, 404)
        assert theirs.headers["content-type"] == absent.headers["content-type"]

    for action, body in REVIEW_BODIES.items():
        theirs = client.post(f"{URL}/{rid}/{action}", json=body, headers=bob)
        absent = client.post(f"{URL}/{missing}/{action}", json=body, headers=bob)
        assert_problem(theirs, 404)
        assert theirs.json() == absent.json(), action

    mine = client.get(f"{URL}/{rid}", headers=alice).json()
    assert mine["status"] == "received" and mine["extended_days"] is None
    assert len(client.get(f"{URL}/{rid}/audit", headers=alice).json()["events"]) == 1


def test_list_shows_only_own_requests(client, make_key):
    alice, bob = make_key(client="alice"), make_key(client="bob")
    alice_ids = {client.post(URL, json=request_body(), headers=alice).json()["id"] for _ in range(3)}
    bob_ids = {client.post(URL, json=request_body(), headers=bob).json()["id"] for _ in range(2)}
    assert {r["id"] for r in client.get(URL, headers=alice).json()["items"]} == alice_ids
    assert {r["id"] for r in client.get(URL, headers=bob).json()["items"]} == bob_ids
    assert len(client.get(URL, params={"status": "received"}, headers=bob).json()["items"]) == 2


def test_keys_of_one_client_share_its_requests(client, make_key):
    first, second = make_key(client="alice"), make_key(client="alice")
    rid = client.post(URL, json=request_body(), headers=first).json()["id"]
    assert client.get(f"{URL}/{rid}", headers=second).status_code == 200


def test_admin_sees_and_reviews_every_client(client, make_key):
    alice, bob, admin = make_key(client="alice"), make_key(client="bob"), make_key("admin", client="ops")
    a = client.post(URL, json=request_body(), headers=alice).json()["id"]
    b = client.post(URL, json=request_body(), headers=bob).json()["id"]
    listed = {r["id"] for r in client.get(URL, headers=admin).json()["items"]}
    assert listed == {a, b}
    assert client.get(f"{URL}/{a}", headers=admin).status_code == 200
    assert client.get(f"{URL}/{b}/audit", headers=admin).status_code == 200
    assert objects.approve(client, admin, b).json()["status"] == "approved"
    assert client.get("/v1/audit/verify", headers=admin).status_code == 200


def test_revoked_key_is_refused(client, make_key):
    from app.db import session_scope
    from app.keys.models import ApiKey
    from app.keys.service import clear_cache, hash_key

    headers = make_key("requests:read,requests:write")
    assert client.get(URL, headers=headers).status_code == 200
    token = headers["Authorization"].split(" ", 1)[1]
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(token)).values(revoked_at=datetime.now(UTC)))
    clear_cache()
    for method, path, body in [("GET", URL, None), ("POST", URL, request_body())]:
        response = client.request(method, path, json=body, headers=headers)
        assert_problem(response, 401)
        assert "www-authenticate" in response.headers
