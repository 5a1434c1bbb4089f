"""Bad input: RFC 9457 problem+json shapes, never a 500."""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest

from tests.factories import assert_problem, request_count
from tests.objects import request_body

URL = "/v1/erasure-requests"
MIB = 1024 * 1024


valid_body = partial(request_body, "prob")


RAW = {"Content-Type": "application/json"}
CREATE_CASES = {
    "malformed json": dict(content=b'{"subject": {"identifiers": '),
    "trailing garbage": dict(content=json.dumps(valid_body()).encode() + b"}}"),
    "not utf-8": dict(content=b'{"subject": "\xff\xfe\xfd"}'),
    "empty body": dict(content=b""),
    "json null": dict(content=b"null"),
    "json array": dict(json=[valid_body()]),
    "json string": dict(json="erase me"),
    "deeply nested": dict(content=b"[" * 100_000 + b"]" * 100_000),
    "unknown top-level field": dict(json=valid_body(priority="high")),
    "unknown subject field": dict(json=valid_body(subject={"identifiers": {"email": "a@b.org"}, "name": "A"})),
    "missing subject": dict(json={"jurisdiction": "gdpr", "source": "portal"}),
    "missing jurisdiction": dict(json={"subject": {"identifiers": {"email": "a@b.org"}}, "source": "portal"}),
    "subject is a string": dict(json=valid_body(subject="a@b.org")),
    "identifiers is a list": dict(json=valid_body(subject={"identifiers": ["a@b.org"]})),
    "identifier value is a number": dict(json=valid_body(subject={"identifiers": {"user_id": 42}})),
    "identifier value is null": dict(json=valid_body(subject={"identifiers": {"user_id": None}})),
    "identity_verified not a bool": dict(json=valid_body(identity_verified="perhaps")),
    "external_id is a number": dict(json=valid_body(external_id=12)),
    "external_id is empty": dict(json=valid_body(external_id="")),
    "external_id too long": dict(json=valid_body(external_id="x" * 201)),
    "external_id with spaces": dict(json=valid_body(external_id="a b")),
    "reason too long": dict(json=valid_body(reason="x" * 2001)),
    "callback not http": dict(json=valid_body(callback_url="ftp://example.org/hook")),
    "callback not a url": dict(json=valid_body(callback_url="not a url")),
    "empty identifiers": dict(json=valid_body(subject={"identifiers": {}})),
    "blank identifier": dict(json=valid_body(subject={"identifiers": {"email": ""}})),
    "whitespace identifier": dict(json=valid_body(subject={"identifiers": {"user_id": "   "}})),
    "too many identifiers": dict(json=valid_body(subject={"identifiers": {f"k{i}": "v" for i in range(11)}})),
    "identifier too long": dict(json=valid_body(subject={"identifiers": {"user_id": "u" * 513}})),
    "bad identifier kind": dict(json=valid_body(subject={"identifiers": {"E-Mail": "a@b.org"}})),
    "email without at": dict(json=valid_body(subject={"identifiers": {"email": "nobody.example.org"}})),
    "phone without digits": dict(json=valid_body(subject={"identifiers": {"phone": "call me"}})),
    "unknown jurisdiction": dict(json=valid_body(jurisdiction="hipaa")),
    "jurisdiction in capitals": dict(json=valid_body(jurisdiction="GDPR")),
    "jurisdiction wrong type": dict(json=valid_body(jurisdiction=1)),
    "unknown source": dict(json=valid_body(source="email")),
}


@pytest.mark.parametrize("case", list(CREATE_CASES))
def test_bad_create_bodies_are_4xx_problems(client, headers, case):
    kwargs = CREATE_CASES[case]
    extra = RAW if "content" in kwargs else {}
    response = client.post(URL, headers={**headers, **extra}, **kwargs)
    assert response.status_code != 500
    # A body that cannot even be decoded may be refused as a bad request instead.
    undecodable = case in ("deeply nested", "not utf-8")
    expected = 400 if undecodable and response.status_code == 400 else 422
    problem = assert_problem(response, expected)
    if not undecodable:
        assert problem["errors"], problem
        assert all(set(e) == {"loc", "msg", "type"} for e in problem["errors"])
    assert request_count() == 0


def test_validation_problem_points_at_the_field(client, headers):
    problem = assert_problem(client.post(URL, json=valid_body(jurisdiction="hipaa"), headers=headers), 422)
    assert ["body", "jurisdiction"] in [e["loc"] for e in problem["errors"]]
    problem = assert_problem(client.post(URL, json=valid_body(priority="high"), headers=headers), 422)
    # An unknown field is reported without its name, which is the caller's input (it could be an
    # e-mail address: tests/security/test_pii_leaks.py).
    assert any(e["loc"] == ["body", "<key>"] and e["type"] == "extra_forbidden" for e in problem["errors"])


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", f"{URL}/not-a-uuid", {}, 422),
    ("POST", f"{URL}/not-a-uuid/approve", {}, 422),
    ("GET", f"{URL}/{uuid.uuid4()}", {}, 404),
    ("POST", f"{URL}/{uuid.uuid4()}/approve", {}, 404),
    ("POST", f"{URL}/{uuid.uuid4()}/teleport", {}, 404),
    ("GET", "/v1/nowhere", {}, 404),
    ("DELETE", URL, {}, 405),
    ("PUT", f"{URL}/{uuid.uuid4()}", {"json": {}}, 405),
    ("POST", f"{URL}/{uuid.uuid4()}/approve", {"json": {"reason": 5}}, 422),
    ("POST", f"{URL}/{uuid.uuid4()}/approve", {"json": {"note": "x"}}, 422),
    ("POST", f"{URL}/{uuid.uuid4()}/deny", {"content": b"{", "headers": RAW}, 422),
    ("POST", f"{URL}/{uuid.uuid4()}/extend", {"json": {"days": "soon", "reason": "r"}}, 422),
    ("GET", URL, {"params": {"limit": "ten"}}, 422),
    ("GET", URL, {"params": {"overdue": "maybe"}}, 422),
    ("GET", URL, {"params": {"cursor": "x" * 201}}, 422),
])
def test_other_bad_requests_are_problems(client, headers, method, path, kwargs, status):
    kwargs = dict(kwargs)
    response = client.request(method, path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)
    assert_problem(response, status)


@pytest.mark.parametrize("path", [URL, f"{URL}/batch"])
def test_body_over_one_mib_with_content_length_is_413(client, headers, path):
    body = json.dumps(valid_body(reason="x" * (MIB + 10))).encode()
    response = client.post(path, content=body, headers={**headers, **RAW})
    assert response.request.headers["content-length"] == str(len(body))
    assert_problem(response, 413)
    assert request_count() == 0


@pytest.mark.parametrize("path", [URL, f"{URL}/batch"])
def test_chunked_body_over_one_mib_is_413(client, headers, path):
    def chunks():
        yield b'{"subject": {"identifiers": {"email": "a@b.org"}}, "reason": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'", "jurisdiction": "gdpr", "source": "portal"}'

    response = client.post(path, content=chunks(), headers={**headers, **RAW})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413)
    assert request_count() == 0


def test_body_just_under_the_limit_is_read(client, headers):
    body = json.dumps(valid_body(reason="x" * (MIB - 500))).encode()
    assert len(body) < MIB
    problem = assert_problem(client.post(URL, content=body, headers={**headers, **RAW}), 422)
    assert any(e["loc"] == ["body", "reason"] for e in problem["errors"])


def test_small_chunked_body_is_accepted(client, headers):
    body = json.dumps(valid_body()).encode()

    def chunks():
        for start in range(0, len(body), 16):
            yield body[start:start + 16]

    response = client.post(URL, content=chunks(), headers={**headers, **RAW})
    assert response.status_code == 201, response.text


def test_body_limit_follows_the_setting(client, headers, settings_env):
    from app.main import create_app
    from fastapi.testclient import TestClient

    settings_env(MAX_BODY_BYTES="1024")
    with TestClient(create_app(), raise_server_exceptions=False) as small:
        assert_problem(small.post(URL, json=valid_body(reason="x" * 1500), headers=headers), 413)
        assert small.post(URL, json=valid_body(reason="x" * 100), headers=headers).status_code == 201


def _operational_errors():
    import psycopg
    from sqlalchemy.exc import OperationalError, TimeoutError

    return [
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
        TimeoutError("QueuePool limit of size 20 overflow 20 reached"),
        psycopg.OperationalError("terminating connection due to administrator command"),
    ]


@pytest.mark.parametrize("error", _operational_errors(), ids=["sqlalchemy", "pool-timeout", "psycopg"])
def test_a_database_that_went_away_answers_503_with_retry_after(client, make_key, monkeypatch, error):
    from app.requests import service

    def unavailable(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(service, "list_for", unavailable)
    response = client.get("/v1/erasure-requests", headers=make_key("requests:read"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/unavailable")
    assert "SELECT" not in response.text and "QueuePool" not in response.text and "administrator" not in response.text
