"""Regimes as data (app/requests/regimes.py): deadlines, extension rules, deny grounds, and the
422 that lists the supported codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from app.requests import lifecycle, regimes
from tests import objects

URL = "/v1/erasure-requests"
request_body = partial(objects.request_body, "regime", source="admin")
RECEIVED = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(("code", "due"), [
    # GDPR keeps its calendar month, clamped to the shorter month's last day.
    ("gdpr", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
    ("uk_gdpr", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
    ("ccpa", RECEIVED + timedelta(days=45)),
    *[(code, RECEIVED + timedelta(days=45)) for code in ("vcdpa", "cpa", "ctdpa", "ucpa", "tdpsa", "ocpa")],
    ("lgpd", RECEIVED + timedelta(days=15)),
    ("pipeda", RECEIVED + timedelta(days=30)),
    ("qc_law25", RECEIVED + timedelta(days=30)),
    ("voluntary", RECEIVED + timedelta(days=30)),
])
def test_each_regime_sets_its_deadline(code, due):
    assert lifecycle.due_at(code, RECEIVED) == due


@pytest.mark.parametrize(("received", "due"), [
    (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 31, tzinfo=UTC)),
    (datetime(2028, 1, 31, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC)),
    (datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 4, 30, tzinfo=UTC)),
    (datetime(2026, 6, 15, 23, 59, tzinfo=UTC), datetime(2026, 7, 15, 23, 59, tzinfo=UTC)),
])
def test_gdpr_month_is_unchanged(received, due):
    assert lifecycle.due_at("gdpr", received) == due


def test_the_table_is_consistent():
    assert "gdpr" in regimes.SUPPORTED and "ccpa" in regimes.SUPPORTED
    for regime in regimes.REGIMES.values():
        assert len(regime.code) <= 10  # the width of erasure_requests.jurisdiction
        assert bool(regime.deadline_days) != bool(regime.deadline_months)
        assert regimes.IDENTITY_UNVERIFIED in regime.deny_grounds
    assert regimes.REGIMES["gdpr"].extension_days == 60 and regimes.REGIMES["ccpa"].extension_days == 45
    assert regimes.REGIMES["lgpd"].extension_days is None and regimes.REGIMES["qc_law25"].extension_days is None
    with pytest.raises(ValueError, match="supported: gdpr"):
        regimes.regime("hipaa")


def create(client, headers, jurisdiction: str) -> dict:
    response = client.post(URL, json=request_body(jurisdiction=jurisdiction), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("code", ["lgpd", "pipeda", "qc_law25", "uk_gdpr", "tdpsa", "voluntary"])
def test_new_regimes_are_accepted_with_their_deadline(client, headers, code):
    created = create(client, headers, code)
    assert created["jurisdiction"] == code
    received = datetime.fromisoformat(created["received_at"])
    assert datetime.fromisoformat(created["due_at"]) == regimes.REGIMES[code].due_at(received)


@pytest.mark.parametrize("code", ["hipaa", "GDPR", "", "lgpd "])
def test_unknown_regime_answers_422_with_the_supported_list(client, headers, code):
    response = client.post(URL, json=request_body(jurisdiction=code), headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "lgpd, pipeda, qc_law25, voluntary" in response.json()["detail"]


def extend(client, headers, request_id, days):
    return client.post(f"{URL}/{request_id}/extend", json={"days": days, "reason": "complex"}, headers=headers)


@pytest.mark.parametrize(("code", "longest"), [("ccpa", 45), ("pipeda", 30), ("vcdpa", 45), ("gdpr", 60)])
def test_extension_is_bounded_by_the_regime(client, headers, code, longest):
    created = create(client, headers, code)
    too_long = extend(client, headers, created["id"], longest + 1)
    assert too_long.status_code == 422
    extended = extend(client, headers, created["id"], longest)
    assert extended.status_code == 200, extended.text
    due = datetime.fromisoformat(created["due_at"]) + timedelta(days=longest)
    assert datetime.fromisoformat(extended.json()["due_at"]) == due
    assert extend(client, headers, created["id"], 1).status_code == 409  # once only


@pytest.mark.parametrize("code", ["lgpd", "qc_law25"])
def test_regimes_without_extension_refuse_one(client, headers, code):
    created = create(client, headers, code)
    response = extend(client, headers, created["id"], 1)
    assert response.status_code == 422
    assert "allows no extension" in response.json()["detail"]
    after = client.get(f"{URL}/{created['id']}", headers=headers).json()
    assert after["due_at"] == created["due_at"] and after["extended_days"] is None


def deny(client, headers, request_id, ground):
    return client.post(f"{URL}/{request_id}/deny", json={"reason": "r", "ground": ground}, headers=headers)


def test_deny_ground_must_be_one_the_regime_allows(client, headers):
    gdpr = create(client, headers, "gdpr")
    refused = deny(client, headers, gdpr["id"], regimes.SECURITY)  # a CCPA ground, not a GDPR one
    assert refused.status_code == 422
    assert refused.json()["allowed_grounds"] == sorted(regimes.REGIMES["gdpr"].deny_grounds)
    assert client.get(f"{URL}/{gdpr['id']}", headers=headers).json()["status"] == "received"

    ccpa = create(client, headers, "ccpa")
    denied = deny(client, headers, ccpa["id"], regimes.SECURITY)
    assert denied.status_code == 200, denied.text
    assert denied.json()["status"] == "denied"
    events = client.get(f"{URL}/{ccpa['id']}/audit", headers=headers).json()["events"]
    assert [e["data"].get("ground") for e in events if e["type"] == "request.denied"] == [regimes.SECURITY]


def test_deny_without_ground_still_works(client, headers):
    created = create(client, headers, "lgpd")
    response = client.post(f"{URL}/{created['id']}/deny", json={"reason": "duplicate"}, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "denied"
