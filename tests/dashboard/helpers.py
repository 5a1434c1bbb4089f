"""Shared steps of the dashboard tests: keys, sign-in, CSRF tokens, requests."""

from __future__ import annotations

import re
import uuid

from app.db import session_scope
from app.keys import service as key_service

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def new_key(scopes: str = "requests:write,requests:read,requests:review", client: str = "acme") -> str:
    with session_scope() as session:
        _key, plaintext = key_service.create_key(session, f"{client}-{uuid.uuid4().hex[:6]}", scopes.split(","), client=client)
    return plaintext


def sign_in(client, plaintext: str) -> None:
    response = client.post("/admin/login", data={"api_key": plaintext}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin"


def csrf_of(client, path: str = "/admin") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def new_request(client, plaintext: str, external_id: str | None = None, email: str | None = None,
                jurisdiction: str = "gdpr", source: str = "portal") -> str:
    body = {"subject": {"identifiers": {"email": email or f"{uuid.uuid4().hex[:10]}@example.org"}},
            "jurisdiction": jurisdiction, "source": source}
    if external_id:
        body["external_id"] = external_id
    response = client.post("/v1/erasure-requests", json=body, headers={"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def complete_without_data(request_id: str) -> None:
    """Approve and plan a request whose subject is in no dataset: the planner completes it and
    signs its certificate, as the worker's beat would."""
    from app.keys.service import Principal
    from app.requests import service as request_service
    from app.unlearning import planner

    with session_scope() as session:
        admin = Principal("00000000-0000-0000-0000-000000000000", "acme", "test", frozenset({"admin"}))
        request = request_service.review(session, admin, uuid.UUID(request_id), "approve", None)
        planner.plan_request(session, request)
