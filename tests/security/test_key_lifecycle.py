"""API keys can be listed, revoked, rotated and expire; a key that ended answers 401 in every API
process within the principal cache's lifetime, and every key event is audited (issue 9, item 8)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.audit import service as audit_service
from app.db import session_scope
from app.idempotency.models import IdempotencyRecord
from app.keys import service as key_service

URL = "/v1/erasure-requests"
KEY_PATTERN = re.compile(r"obl_[A-Za-z0-9_-]+")
HANG = 30.0  # a generous bound for "within the cache's lifetime"; not a speed assertion


def bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


def create(http, operator, **body):
    r = http.post("/v1/keys", json={"name": "portal", "client": "acme", "scopes": ["requests:read"], **body}, headers=operator)
    assert r.status_code == 201, r.text
    return r.json()


def key_events(key_id: str) -> list[tuple[str, str, dict]]:
    with session_scope() as session:
        stream = key_service.key_stream(key_id)
        assert audit_service.verify_stream(session, stream).valid
        return [(e.type, e.actor, e.data) for e in audit_service.events(session, stream)]


def eventually_401(get, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = get().status_code
        if status == 401:
            return
        assert status == 200, status
        assert time.monotonic() < deadline, f"the key still answered {status} after {timeout} s"
        time.sleep(0.2)


def test_create_list_revoke_over_the_admin_api(client, operator):
    created = create(client, operator)
    assert created["state"] == "active" and created["client"] == "acme" and created["scopes"] == ["requests:read"]
    headers = bearer(created["key"])
    assert client.get(URL, headers=headers).status_code == 200
    listed = client.get("/v1/keys", headers=operator).json()["items"]
    assert {(k["id"], k["client"]) for k in listed} >= {(created["id"], "acme")}
    assert all("key" not in k and "key_hash" not in k for k in listed)

    r = client.post(f"/v1/keys/{created['id']}/revoke", json={"reason": "left the company"}, headers=operator)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    refused = client.get(URL, headers=headers)
    assert refused.status_code == 401 and refused.headers["content-type"].startswith("application/problem+json")
    # Revoking again changes nothing and records nothing.
    assert client.post(f"/v1/keys/{created['id']}/revoke", headers=operator).json()["revoked_at"] == r.json()["revoked_at"]
    events = key_events(created["id"])
    admin_id = client.get("/v1/keys", params={"client": "ops"}, headers=operator).json()["items"][0]["id"]
    assert [t for t, _, _ in events] == ["key.created", "key.revoked"]
    assert events[1][2] == {"reason": "left the company"}
    assert all(actor == f"key:{admin_id}" for _, actor, _ in events)


def test_rotation_makes_a_successor_and_ends_the_old_key(client, operator):
    old = create(client, operator, scopes=["requests:read", "requests:write"])
    r = client.post(f"/v1/keys/{old['id']}/rotate", headers=operator)
    assert r.status_code == 201, r.text
    successor, previous = r.json()["successor"], r.json()["previous"]
    assert previous["state"] == "revoked" and successor["rotated_from"] == old["id"]
    assert (successor["client"], successor["name"], successor["scopes"]) == ("acme", "portal", old["scopes"])
    assert client.get(URL, headers=bearer(old["key"])).status_code == 401
    assert client.get(URL, headers=bearer(successor["key"])).status_code == 200
    assert [t for t, _, _ in key_events(old["id"])] == ["key.created", "key.rotated"]
    assert key_events(old["id"])[1][2]["successor"] == successor["id"]
    assert key_events(successor["id"])[0][2]["rotated_from"] == old["id"]
    assert client.post(f"/v1/keys/{old['id']}/rotate", headers=operator).status_code == 409


def test_rotation_with_grace_keeps_the_old_key_until_it_ends(client, operator):
    old = create(client, operator)
    r = client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 2}, headers=operator)
    assert r.status_code == 201 and r.json()["previous"]["state"] == "active"
    assert r.json()["previous"]["expires_at"] is not None
    assert client.get(URL, headers=bearer(old["key"])).status_code == 200
    eventually_401(lambda: client.get(URL, headers=bearer(old["key"])))
    assert client.get(URL, headers=bearer(r.json()["successor"]["key"])).status_code == 200


def test_an_expired_key_is_refused_even_from_the_cache(client, operator, monkeypatch):
    created = create(client, operator, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    headers = bearer(created["key"])
    assert client.get(URL, headers=headers).status_code == 200  # now cached
    found, principal = key_service.cached_principal(created["key"])
    assert found and principal is not None
    later = datetime.now(UTC) + timedelta(hours=2)
    monkeypatch.setattr(key_service, "utcnow", lambda: later)
    assert key_service.cached_principal(created["key"]) == (True, None)
    assert client.get(URL, headers=headers).status_code == 401
    with session_scope() as session:
        assert not key_service.key_is_active(session, created["id"])
    listed = client.get("/v1/keys", params={"state": "expired"}, headers=operator).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]


def test_expiry_must_be_in_the_future_and_scopes_known(client, operator):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = {"name": "portal", "scopes": ["requests:read"]}
    assert client.post("/v1/keys", json={**body, "expires_at": past}, headers=operator).status_code == 422
    assert client.post("/v1/keys", json={**body, "scopes": ["root"]}, headers=operator).status_code == 422
    naive = datetime.now().isoformat()
    assert client.post("/v1/keys", json={**body, "expires_at": naive}, headers=operator).status_code == 422


def test_the_public_signing_key_route_is_not_taken_by_the_key_routes(client):
    r = client.get("/v1/keys/signing")
    assert r.status_code == 200 and r.json()["algorithm"]


def test_only_admins_manage_keys(client, operator, make_key):
    target = create(client, operator)
    reader = make_key("requests:read,requests:write,requests:review,models:read,models:write", client="acme")
    for method, path in [("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", f"/v1/keys/{target['id']}"),
                         ("POST", f"/v1/keys/{target['id']}/revoke"), ("POST", f"/v1/keys/{target['id']}/rotate")]:
        assert client.request(method, path, json={}, headers=reader).status_code == 403
        assert client.request(method, path, json={}).status_code == 401
    assert client.get(URL, headers=bearer(target["key"])).status_code == 200


def test_listing_pages_with_a_cursor(client, operator):
    ids = {create(client, operator, name=f"k{i}", client=f"c{i % 2}")["id"] for i in range(5)}
    seen, cursor = [], None
    while True:
        page = client.get("/v1/keys", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=operator).json()
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6 and ids < set(seen)
    only = client.get("/v1/keys", params={"client": "c1"}, headers=operator).json()["items"]
    assert {k["client"] for k in only} == {"c1"} and len(only) == 2
    assert client.get("/v1/keys", params={"cursor": "nonsense"}, headers=operator).status_code == 400


def test_idempotent_creation_never_stores_the_secret(client, operator):
    body = {"name": "portal", "client": "acme", "scopes": ["requests:read"]}
    first = client.post("/v1/keys", json=body, headers={**operator, "Idempotency-Key": "key-1"})
    again = client.post("/v1/keys", json=body, headers={**operator, "Idempotency-Key": "key-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["key"] is None
    assert KEY_PATTERN.fullmatch(first.json()["key"])
    with session_scope() as session:
        stored = [str(r.body) for r in session.scalars(select(IdempotencyRecord))]
    assert stored and not any(first.json()["key"] in text for text in stored)
    other = client.post("/v1/keys", json={**body, "name": "other"}, headers={**operator, "Idempotency-Key": "key-1"})
    assert other.status_code == 422
    assert len([k for k in client.get("/v1/keys", headers=operator).json()["items"] if k["client"] == "acme"]) == 1


def test_cli_lists_revokes_and_rotates(database_url, client):
    runner = CliRunner()
    from app.cli import cli

    made = runner.invoke(cli, ["keys", "create", "--name", "etl", "--scopes", "requests:read", "--client", "acme",
                               "--expires-in-days", "30"])
    assert made.exit_code == 0, made.output
    plaintext = KEY_PATTERN.findall(made.stdout)[0]
    key_id = re.search(r"id:\s+(\S+)", made.stdout).group(1)
    listed = runner.invoke(cli, ["keys", "list", "--client", "acme"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert plaintext not in listed.stdout

    rotated = runner.invoke(cli, ["keys", "rotate", key_id])
    assert rotated.exit_code == 0, rotated.output
    successor = KEY_PATTERN.findall(rotated.stdout)[0]
    assert client.get(URL, headers=bearer(plaintext)).status_code == 401
    assert client.get(URL, headers=bearer(successor)).status_code == 200
    successor_id = re.search(r"id:\s+(\S+)", rotated.stdout).group(1)
    assert runner.invoke(cli, ["keys", "revoke", successor_id, "--reason", "done"]).exit_code == 0
    assert client.get(URL, headers=bearer(successor)).status_code == 401
    assert [t for t, _, _ in key_events(successor_id)] == ["key.created", "key.revoked"]
    assert all(actor == "cli" for _, actor, _ in key_events(key_id))

    unknown = runner.invoke(cli, ["keys", "revoke", "00000000-0000-0000-0000-000000000000"])
    assert unknown.exit_code == 1 and "No API key" in unknown.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def second_api(database_url, tmp_path):
    """Another API process on the same database, with its own principal cache."""
    port = _free_port()
    log = tmp_path / "api.log"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_a_key_ended_here_is_refused_by_another_process(client, operator, second_api, how):
    created = create(client, operator)
    headers = bearer(created["key"])

    def elsewhere():
        return httpx.get(f"{second_api}{URL}", headers=headers, timeout=10)

    # The other process has read the key and holds it in its cache.
    assert elsewhere().status_code == 200
    assert elsewhere().status_code == 200
    assert client.post(f"/v1/keys/{created['id']}/{how}", headers=operator).status_code in (200, 201)
    eventually_401(elsewhere)
    with session_scope() as session:
        assert not key_service.key_is_active(session, created["id"])
