"""Intake: POST /v1/erasure-requests, deadlines, normalisation, dedup, auto-approval."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from dateutil.relativedelta import relativedelta
from sqlalchemy import select

from tests import objects
from tests.factories import request_count, set_columns

URL = "/v1/erasure-requests"


request_body = partial(objects.request_body, "intake", identify=("email",))


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def subject_keys_of(request_id: str) -> dict[str, str]:
    from app.db import session_scope
    from app.requests.models import RequestSubject

    with session_scope() as session:
        rows = session.execute(
            select(RequestSubject.kind, RequestSubject.subject_key).where(RequestSubject.request_id == uuid.UUID(request_id))
        ).all()
    return dict(rows)


def expected_subject_key(kind: str, normalised: str) -> str:
    secret = os.environ["OBLIVIATE_SECRET_KEY"].encode()
    return hmac.new(secret, kind.encode() + b"\x1f" + normalised.encode(), hashlib.sha256).hexdigest()


def test_create_answers_201_with_location_and_fields(client, headers):
    body = request_body(jurisdiction="ccpa", source="admin", external_id="crm-0001", reason="user asked")
    response = client.post(URL, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert uuid.UUID(created["id"])
    assert response.headers["location"] == f"{URL}/{created['id']}"
    assert created["status"] == "received"
    assert created["jurisdiction"] == "ccpa"
    assert created["source"] == "admin"
    assert created["external_id"] == "crm-0001"
    assert created["identity_verified"] is False
    assert created["reason"] == "user asked"
    received = parse_time(created["received_at"])
    assert abs(datetime.now(UTC) - received) < timedelta(minutes=1)
    assert parse_time(created["due_at"]) > received
    assert isinstance(created["days_left"], int)

    fetched = client.get(response.headers["location"], headers=headers)
    assert fetched.status_code == 200
    assert {k: fetched.json()[k] for k in ("id", "status", "received_at", "due_at", "external_id")} == {
        k: created[k] for k in ("id", "status", "received_at", "due_at", "external_id")
    }


def test_gdpr_deadline_is_one_calendar_month(client, headers):
    created = client.post(URL, json=request_body(jurisdiction="gdpr"), headers=headers).json()
    received = parse_time(created["received_at"])
    assert parse_time(created["due_at"]) == received + relativedelta(months=1)


def test_ccpa_deadline_is_45_days(client, headers):
    created = client.post(URL, json=request_body(jurisdiction="ccpa"), headers=headers).json()
    assert parse_time(created["due_at"]) - parse_time(created["received_at"]) == timedelta(days=45)


@pytest.mark.parametrize(
    ("jurisdiction", "received", "due"),
    [
        ("gdpr", datetime(2027, 1, 31, 9, 30, tzinfo=UTC), datetime(2027, 2, 28, 9, 30, tzinfo=UTC)),
        ("gdpr", datetime(2028, 1, 31, 9, 30, tzinfo=UTC), datetime(2028, 2, 29, 9, 30, tzinfo=UTC)),
        ("gdpr", datetime(2027, 3, 31, 0, 0, tzinfo=UTC), datetime(2027, 4, 30, 0, 0, tzinfo=UTC)),
        ("gdpr", datetime(2026, 12, 15, 23, 59, tzinfo=UTC), datetime(2027, 1, 15, 23, 59, tzinfo=UTC)),
        ("ccpa", datetime(2027, 1, 31, 9, 30, tzinfo=UTC), datetime(2027, 3, 17, 9, 30, tzinfo=UTC)),
    ],
)
def test_deadline_of_a_request_received_on_a_given_day(client, headers, monkeypatch, jurisdiction, received, due):
    from app.requests import service

    monkeypatch.setattr(service, "utcnow", lambda: received)
    created = client.post(URL, json=request_body(jurisdiction=jurisdiction), headers=headers).json()
    assert parse_time(created["received_at"]) == received
    assert parse_time(created["due_at"]) == due


@pytest.mark.parametrize(("offset", "days_left"), [
    (timedelta(days=10, hours=1), 10),
    (timedelta(hours=2), 0),
    (timedelta(hours=-1), -1),
    (timedelta(days=-3, hours=-1), -4),
])
def test_days_left_counts_whole_days_and_goes_negative(client, headers, offset, days_left):
    rid = client.post(URL, json=request_body(), headers=headers).json()["id"]
    set_columns(rid, due_at=datetime.now(UTC) + offset)
    assert client.get(f"{URL}/{rid}", headers=headers).json()["days_left"] == days_left


@pytest.mark.parametrize(("kind", "variant", "canonical", "normalised"), [
    ("email", "  Jane.Doe+x@Example.COM \t", "jane.doe+x@example.com", "jane.doe+x@example.com"),
    ("phone", "+1 (555) 010-4477", "15550104477", "15550104477"),
    ("user_id", "  u-4711 ", "u-4711", "u-4711"),
])
def test_identifier_variants_share_one_subject_key(client, headers, kind, variant, canonical, normalised):
    objects.hold_kinds(client, headers, "user_id")
    first = client.post(URL, json=request_body(subject={"identifiers": {kind: variant}}), headers=headers)
    second = client.post(URL, json=request_body(subject={"identifiers": {kind: canonical}}), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    first_keys, second_keys = subject_keys_of(first.json()["id"]), subject_keys_of(second.json()["id"])
    assert first_keys == second_keys == {kind: expected_subject_key(kind, normalised)}


def test_different_subjects_and_kinds_get_different_keys(client, headers):
    objects.hold_kinds(client, headers, "user_id")
    one = client.post(URL, json=request_body(subject={"identifiers": {"email": "a@example.org", "user_id": "a@example.org"}}), headers=headers)
    other = client.post(URL, json=request_body(subject={"identifiers": {"email": "b@example.org"}}), headers=headers)
    one_keys, other_keys = subject_keys_of(one.json()["id"]), subject_keys_of(other.json()["id"])
    assert set(one_keys) == {"email", "user_id"}
    assert one_keys["email"] != one_keys["user_id"]
    assert one_keys["email"] != other_keys["email"]


def test_same_external_id_returns_the_existing_request(client, headers):
    # The same subject again (another subject under this external_id answers 409:
    # tests/security/test_external_id_reuse.py).
    subject = {"identifiers": {"email": "ticket-77@example.org"}}
    first = client.post(URL, json=request_body(external_id="ticket-77", subject=subject), headers=headers)
    assert first.status_code == 201
    again = client.post(URL, json=request_body(external_id="ticket-77", subject=subject, jurisdiction="ccpa"), headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["jurisdiction"] == "gdpr"
    assert again.headers["location"] == first.headers["location"]
    assert request_count() == 1
    trail = client.get(f"{URL}/{first.json()['id']}/audit", headers=headers).json()
    assert [e["type"] for e in trail["events"]] == ["request.received"]


def test_external_id_is_scoped_to_the_client(client, make_key):
    acme, beta = make_key(client="acme"), make_key(client="beta")
    mine = client.post(URL, json=request_body(external_id="shared-1"), headers=acme)
    theirs = client.post(URL, json=request_body(external_id="shared-1"), headers=beta)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert request_count() == 2


def test_received_event_names_kinds_but_no_values(client, headers):
    body = request_body(subject={"identifiers": {"email": "kinds@example.org", "phone": "+44 20 7946 0000"}})
    rid = client.post(URL, json=body, headers=headers).json()["id"]
    events = client.get(f"{URL}/{rid}/audit", headers=headers).json()["events"]
    assert [e["type"] for e in events] == ["request.received"]
    assert events[0]["actor"].startswith("key:")
    assert events[0]["data"]["identifier_kinds"] == ["email", "phone"]
    assert events[0]["data"]["status"] == "received"
    assert "kinds@example.org" not in str(events) and "2079460000" not in str(events)


def test_auto_approve_policy_approves_verified_requests(client, headers, settings_env):
    from app.requests.service import AUTO_APPROVER

    settings_env(AUTO_APPROVE_VERIFIED="true")
    verified = client.post(URL, json=request_body(identity_verified=True), headers=headers)
    unverified = client.post(URL, json=request_body(identity_verified=False), headers=headers)
    assert verified.status_code == unverified.status_code == 201
    assert verified.json()["status"] == "approved"
    assert verified.json()["decided_at"] is not None
    assert unverified.json()["status"] == "received"

    events = client.get(f"{URL}/{verified.json()['id']}/audit", headers=headers).json()
    assert [e["type"] for e in events["events"]] == ["request.received", "request.approved"]
    assert events["events"][1]["actor"] == AUTO_APPROVER == "policy:auto-approve-verified"
    assert events["chain_valid"] is True
    plain = client.get(f"{URL}/{unverified.json()['id']}/audit", headers=headers).json()
    assert [e["type"] for e in plain["events"]] == ["request.received"]


def test_verified_requests_wait_for_review_without_the_policy(client, headers):
    response = client.post(URL, json=request_body(identity_verified=True), headers=headers)
    assert response.json()["status"] == "received"
    assert response.json()["identity_verified"] is True
