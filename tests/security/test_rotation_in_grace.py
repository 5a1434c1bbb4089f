"""A key in its grace period cannot be rotated again (issue 20, item 12).

Before: the old key, still active during its grace, rotated a second time with 201, leaving
two live successors of one key.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.db import session_scope
from app.keys.models import ApiKey


def _new_key(client, operator) -> dict:
    response = client.post("/v1/keys", json={"name": "portal", "client": "acme", "scopes": ["requests:read"]}, headers=operator)
    assert response.status_code == 201, response.text
    return response.json()


def _successors(key_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.rotated_from == uuid.UUID(key_id)))


def test_a_key_in_its_grace_period_is_not_rotated_again(client, operator):
    old = _new_key(client, operator)
    first = client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 3600}, headers=operator)
    assert first.status_code == 201 and first.json()["previous"]["state"] == "active"
    again = client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 3600}, headers=operator)
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    assert first.json()["successor"]["id"] in again.json()["detail"]
    assert _successors(old["id"]) == 1
    # The successor itself rotates as usual.
    successor = first.json()["successor"]["id"]
    assert client.post(f"/v1/keys/{successor}/rotate", headers=operator).status_code == 201


def test_concurrent_rotations_leave_one_successor(client, operator):
    old = _new_key(client, operator)

    def rotate(_n: int) -> int:
        return client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 600}, headers=operator).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = sorted(pool.map(rotate, range(6)))
    assert answers == [201] + [409] * 5
    assert _successors(old["id"]) == 1
