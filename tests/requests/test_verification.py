"""Requester verification as a state (docs/identity-resolution.md, Requester verification):
`identity_verification` at intake and after, the deprecated `identity_verified` alias, the
override an unverified approval needs, and the denial of requests left unverified."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests import objects
from tests.factories import set_columns, trail

URL = "/v1/erasure-requests"
PORTAL = {"status": "verified", "method": "portal"}


def _create(client, headers, **fields) -> dict:
    response = client.post(URL, json=objects.request_body("verify", **fields), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_intake_records_the_verification_and_the_deprecated_alias(client, headers):
    verified = _create(client, headers, identity_verification=PORTAL)
    assert verified["identity_verification"]["status"] == "verified"
    assert verified["identity_verification"]["method"] == "portal"
    assert verified["identity_verification"]["at"] is not None and verified["identity_verified"] is True
    alias = _create(client, headers, identity_verified=True)
    assert {k: alias["identity_verification"][k] for k in ("status", "method")} == {"status": "verified", "method": "other"}
    plain = _create(client, headers)
    assert plain["identity_verification"] == {"status": "unverified", "method": None, "at": None}
    assert plain["identity_verified"] is False
    failed = _create(client, headers, identity_verification={"status": "failed", "method": "document"})
    assert failed["identity_verified"] is False
    received = trail(client, headers, verified["id"])["events"][0]["data"]
    assert received["identity_verification"] == {"status": "verified", "method": "portal"}


@pytest.mark.parametrize("fields", [
    {"identity_verification": {"status": "verified"}},  # no method
    {"identity_verification": {"status": "maybe", "method": "portal"}},
    {"identity_verification": {"status": "verified", "method": "telepathy"}},
    {"identity_verification": {"status": "verified", "method": "portal", "at": "2026-01-01T00:00:00"}},  # no zone
    {"identity_verification": {"status": "verified", "method": "portal", "at": "2999-01-01T00:00:00Z"}},
    {"identity_verification": {"status": "failed", "method": "portal"}, "identity_verified": True},
])
def test_a_bad_verification_is_422_and_stores_nothing(client, headers, fields):
    from tests.factories import request_count

    before = request_count()
    response = client.post(URL, json=objects.request_body("verify", **fields), headers=headers)
    assert response.status_code == 422 and response.json()["status"] == 422
    assert request_count() == before


def test_approving_an_unverified_request_needs_an_audited_override(client, headers):
    for verification in (None, {"status": "failed", "method": "document"}):
        fields = {} if verification is None else {"identity_verification": verification}
        request = _create(client, headers, **fields)
        refused = client.post(f"{URL}/{request['id']}/approve", headers=headers)
        assert refused.status_code == 422 and refused.json()["verification_status"] == request[
            "identity_verification"]["status"]
        assert client.get(f"{URL}/{request['id']}", headers=headers).json()["status"] == "received"
        assert objects.approve(client, headers, request["id"]).json()["status"] == "approved"
        event = trail(client, headers, request["id"])["events"][-1]
        assert event["type"] == "request.approved"
        assert event["data"]["override_reason"] == objects.OVERRIDE["override_reason"]
        assert event["data"]["identity_verification"] == request["identity_verification"]["status"]
    # A verified request is approved as it is, and its event carries no override.
    verified = _create(client, headers, identity_verification=PORTAL)
    assert client.post(f"{URL}/{verified['id']}/approve", headers=headers).status_code == 200
    assert "override_reason" not in trail(client, headers, verified["id"])["events"][-1]["data"]
    # The override is free text in the append-only trail: it may name nobody.
    other = _create(client, headers)
    named = client.post(f"{URL}/{other['id']}/approve", json={"override_reason": "called jane@example.org"},
                        headers=headers)
    assert named.status_code == 422 and "jane@example.org" not in named.text


def test_verification_recorded_later_is_audited_and_follows_the_auto_approve_policy(client, headers, settings_env):
    request = _create(client, headers)
    path = f"{URL}/{request['id']}/identity-verification"
    failed = client.post(path, json={"status": "failed", "method": "document"}, headers=headers)
    assert failed.status_code == 200 and failed.json()["status"] == "received"
    event = trail(client, headers, request["id"])["events"][-1]
    assert event["type"] == "request.identity_verification"
    assert (event["data"]["from"], event["data"]["to"], event["data"]["method"]) == ("unverified", "failed", "document")

    settings_env(AUTO_APPROVE_VERIFIED="true")
    verified = client.post(path, json=PORTAL, headers=headers).json()
    assert verified["identity_verified"] is True and verified["status"] == "approved"
    assert [e["type"] for e in trail(client, headers, request["id"])["events"]][-2:] == [
        "request.identity_verification", "request.approved"]
    assert client.post(f"{URL}/{uuid.uuid4()}/identity-verification", json=PORTAL, headers=headers).status_code == 404


def test_the_auto_approve_policy_reads_the_new_field(client, headers, settings_env):
    settings_env(AUTO_APPROVE_VERIFIED="true")
    assert _create(client, headers, identity_verification=PORTAL)["status"] == "approved"
    assert _create(client, headers, identity_verification={"status": "failed", "method": "portal"})["status"] == "received"


def test_requests_left_unverified_are_denied_with_their_regimes_reason(client, headers, settings_env):
    from app.db import session_scope, utcnow
    from app.requests import service

    old = _create(client, headers, jurisdiction="ccpa")
    held = _create(client, headers)
    assert client.post(f"{URL}/{held['id']}/hold", json={"reason": "waiting for documents"}, headers=headers).status_code == 200
    verified = _create(client, headers, identity_verification=PORTAL)
    fresh = _create(client, headers)
    long_ago = utcnow() - timedelta(days=11)
    for request in (old, held, verified):
        set_columns(request["id"], received_at=long_ago)

    with session_scope() as session:
        assert service.deny_unverified(session) == 0  # off unless set
    settings_env(UNVERIFIED_DENY_AFTER_DAYS="10")
    with session_scope() as session:
        assert service.deny_unverified(session) == 2
    statuses = {key: client.get(f"{URL}/{r['id']}", headers=headers).json()
                for key, r in (("old", old), ("held", held), ("verified", verified), ("fresh", fresh))}
    assert statuses["old"]["status"] == statuses["held"]["status"] == "denied"
    assert statuses["verified"]["status"] == "received"
    assert statuses["fresh"]["status"] == "received"
    assert "CCPA/CPRA" in statuses["old"]["status_reason"] and "10 days" in statuses["old"]["status_reason"]
    event = trail(client, headers, old["id"])["events"][-1]
    assert event["type"] == "request.denied" and event["actor"] == service.UNVERIFIED_DENIER
    assert event["data"]["ground"] == "identity_unverified"
