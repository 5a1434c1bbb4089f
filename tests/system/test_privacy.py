"""Raw identifiers never reach responses, the database or the logs."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import string
import subprocess
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from tests import objects

URL = "/v1/erasure-requests"


@dataclass(frozen=True)
class Planted:
    token: str
    email: str
    phone: str
    phone_digits: str
    phone_national: str
    user_id: str

    @property
    def needles(self) -> list[str]:
        """Every way the planted values could show up, lower-cased."""
        national_digits = self.phone_national.replace("-", "")
        return [n.lower() for n in (
            self.token, self.email, self.phone, self.phone_digits, self.phone_national, national_digits,
        )]


@pytest.fixture
def planted() -> Planted:
    # letters only, so that no digits in it could make a valid phone number
    token = "".join(random.choice(string.ascii_lowercase) for _ in range(16))
    line = f"{random.randrange(10**6, 10**7)}"
    return Planted(
        token=token,
        email=f"Zed.{token}@Leak-Check.Example",
        phone=f"+1 (555) {line[:3]}-{line[3:]}",
        phone_digits=f"1555{line}",
        phone_national=f"555-{line[:3]}-{line[3:]}",
        user_id=f"user-{token}",
    )


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def request_body(planted: Planted, **overrides):
    """A request for the planted subject, whose reason names the planted e-mail address and phone number."""
    reason = (
        f"Please erase {planted.email} (also written {planted.email.upper()}), "
        f"phone {planted.phone}, {planted.phone_digits} or {planted.phone_national}."
    )
    identifiers = {"email": planted.email, "phone": planted.phone, "user_id": planted.user_id}
    return objects.request_body(identifiers=identifiers, **{"reason": reason, **overrides})


def assert_clean(text: str, planted: Planted, where: str) -> None:
    lowered = text.lower()
    for needle in planted.needles:
        assert needle not in lowered, f"{needle!r} found in {where}"


def response_text(response) -> str:
    return response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())


def database_text(database_url: str, data_dir) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        assert any(p.name == "obliviate.db" for p in files)
        return "\n".join(p.read_bytes().decode("latin-1") for p in files)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(["pg_dump", "--data-only", "--no-owner", "--dbname", libpq], capture_output=True, text=True, check=True)
    assert "COPY public.erasure_requests" in dump.stdout
    return dump.stdout


def exercise(client, headers, planted: Planted) -> list:
    """Every path that receives the identifiers, valid or not. Returns the responses."""
    objects.hold_kinds(client, headers, "user_id")
    body = request_body(planted)
    key = {"Idempotency-Key": f"privacy-{planted.token[:6]}", **headers}
    responses = []

    created = client.post(URL, json=body, headers=key)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    responses.append(created)
    responses.append(client.post(URL, json=body, headers=key))
    assert responses[-1].status_code == 201
    responses.append(client.post(URL, json=request_body(planted, jurisdiction="ccpa"), headers=key))
    assert responses[-1].status_code == 422

    invalid = [
        request_body(planted, jurisdiction="mars"),
        request_body(planted, source=planted.email),
        request_body(planted, identity_verified=planted.email),
        request_body(planted, contact=planted.email),
        request_body(planted, callback_url=f"mailto:{planted.email}"),
        {"subject": {"identifiers": {"email": f"no-at-sign-{planted.token}"}}, "jurisdiction": "gdpr", "source": "portal"},
        {"subject": {"identifiers": {"phone": f"call-{planted.token}"}}, "jurisdiction": "gdpr", "source": "portal"},
        {"subject": {"identifiers": {"email": ["list", planted.email]}}, "jurisdiction": "gdpr", "source": "portal"},
        {"subject": {"identifiers": {"email": planted.email}, "extra": planted.email}, "jurisdiction": "gdpr", "source": "portal"},
        {"subject": planted.email, "jurisdiction": "gdpr", "source": "portal"},
    ]
    for bad in invalid:
        response = client.post(URL, json=bad, headers=headers)
        assert response.status_code == 422, (bad, response.text)
        responses.append(response)
    truncated = json.dumps(body)[:-20]
    responses.append(client.post(URL, content=truncated, headers={"Content-Type": "application/json", **headers}))
    assert responses[-1].status_code == 422

    items = [
        request_body(planted, external_id="privacy-batch-1"),
        request_body(planted, jurisdiction="mars"),
        request_body(planted, external_id="privacy-batch-1"),
        {"subject": {"identifiers": {"email": f"bad-{planted.token}"}}, "jurisdiction": "gdpr", "source": "batch"},
    ]
    batch_key = {"Idempotency-Key": f"privacy-batch-{planted.token[:6]}", **headers}
    responses.append(client.post(f"{URL}/batch", json=items, headers=batch_key))
    assert [i["result"] for i in responses[-1].json()["items"]] == ["created", "error", "existing", "error"]
    responses.append(client.post(f"{URL}/batch", json=items, headers=batch_key))
    responses.append(client.post(f"{URL}/batch", json=items[:2], headers=batch_key))
    assert responses[-1].status_code == 422

    responses.append(client.get(f"{URL}/{rid}", headers=headers))
    responses.append(client.get(URL, headers=headers))
    responses.append(client.get(f"{URL}/{rid}/audit", headers=headers))
    responses.append(objects.approve(client, headers, rid))
    responses.append(client.get("/metrics"))
    return responses


def test_planted_identifiers_leak_nowhere(client, headers, planted, database_url, data_dir, all_logs, capfd):
    responses = exercise(client, headers, planted)
    for response in responses:
        assert_clean(response_text(response), planted, f"{response.request.method} {response.request.url} → {response.status_code}")

    stored_reason = responses[0].json()["reason"]
    assert "[redacted]" in stored_reason

    assert_clean(database_text(database_url, data_dir), planted, "the database")

    assert all_logs.records, "nothing was logged at DEBUG: the log check would prove nothing"
    assert_clean(all_logs.text, planted, "captured log text")
    for record in all_logs.records:
        assert_clean(record.getMessage(), planted, f"log record from {record.name}")
    out, err = capfd.readouterr()
    assert_clean(out + err, planted, "stdout/stderr")


def test_the_checks_would_see_a_leak(client, headers, planted, database_url, data_dir):
    """The same greps find the value once it is stored in plain text, so a pass means something.
    The API refuses an external_id that is an e-mail address, so it is planted behind its back."""
    from sqlalchemy import update

    from app.db import session_scope
    from app.requests.models import ErasureRequest

    objects.hold_kinds(client, headers, "user_id")
    rid = client.post(URL, json=request_body(planted), headers=headers).json()["id"]
    with session_scope() as session:
        session.execute(update(ErasureRequest).where(ErasureRequest.id == uuid.UUID(rid)).values(external_id=planted.email))
    with pytest.raises(AssertionError):
        assert_clean(database_text(database_url, data_dir), planted, "the database")


@pytest.mark.parametrize(("kind", "value"), [
    ("email", "not-an-email-{token}"),
    ("email", "@{token}"),
    ("phone", "phone-{token}"),
    ("phone", "12{token}"),
    ("user_id", " "),
    ("Bad Kind", "{token}"),
])
def test_bad_identifier_errors_do_not_echo_the_value(client, headers, planted, kind, value):
    value = value.format(token=planted.token)
    body = objects.request_body(identifiers={kind: value})
    response = client.post(URL, json=body, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert planted.token not in response.text
    if value.strip():
        assert value not in response.text


def test_batch_item_errors_do_not_echo_values(client, headers, planted):
    items = [{"subject": {"identifiers": {"email": f"broken-{planted.token}"}}, "jurisdiction": "gdpr", "source": "batch"},
             {"subject": {"identifiers": {"email": planted.email}}, "jurisdiction": planted.email, "source": "batch"}]
    response = client.post(f"{URL}/batch", json=items, headers=headers)
    assert response.status_code == 200
    assert [i["result"] for i in response.json()["items"]] == ["error", "error"]
    assert_clean(response.text, planted, "batch response")
