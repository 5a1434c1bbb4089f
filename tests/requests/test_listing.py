"""GET /v1/erasure-requests: filters and cursor pagination."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import pytest
from sqlalchemy import select

from tests import objects
from tests.factories import set_columns

URL = "/v1/erasure-requests"


request_body = partial(objects.request_body, "list")


def create(client, headers, **overrides) -> str:
    response = client.post(URL, json=request_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_filter_by_status_and_source(client, headers):
    portal = create(client, headers, source="portal")
    batch = create(client, headers, source="batch")
    approved = create(client, headers, source="admin")
    objects.approve(client, headers, approved)
    assert set(ids(client.get(URL, params={"status": "received"}, headers=headers))) == {portal, batch}
    assert ids(client.get(URL, params={"status": "approved"}, headers=headers)) == [approved]
    assert ids(client.get(URL, params={"status": "completed"}, headers=headers)) == []
    assert ids(client.get(URL, params={"source": "batch"}, headers=headers)) == [batch]
    assert ids(client.get(URL, params={"source": "admin", "status": "received"}, headers=headers)) == []
    assert ids(client.get(URL, params={"source": "admin", "status": "approved"}, headers=headers)) == [approved]


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"source": "email"}, {"overdue": "sometimes"}])
def test_unknown_filter_values_are_422(client, headers, params):
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_overdue_filter(client, headers):
    late = create(client, headers)
    on_time = create(client, headers)
    late_but_denied = create(client, headers)
    client.post(f"{URL}/{late_but_denied}/deny", json={"reason": "r"}, headers=headers)
    past = datetime.now(UTC) - timedelta(days=2)
    set_columns(late, due_at=past)
    set_columns(late_but_denied, due_at=past)
    assert ids(client.get(URL, params={"overdue": "true"}, headers=headers)) == [late]
    assert set(ids(client.get(URL, params={"overdue": "false"}, headers=headers))) == {on_time, late_but_denied}
    assert client.get(f"{URL}/{late}", headers=headers).json()["days_left"] < 0


def test_created_after_and_before(client, headers):
    stamps = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)]
    made = []
    for stamp in stamps:
        rid = create(client, headers)
        set_columns(rid, received_at=stamp)
        made.append(rid)
    jan, feb, mar = made

    def query(**params):
        return set(ids(client.get(URL, params=params, headers=headers)))

    assert query(created_after="2026-01-15T00:00:00Z") == {feb, mar}
    assert query(created_before="2026-02-15T00:00:00Z") == {jan, feb}
    assert query(created_after="2026-01-15T00:00:00Z", created_before="2026-02-15T00:00:00Z") == {feb}
    # bounds: created_after is inclusive, created_before exclusive
    assert query(created_after="2026-02-01T00:00:00Z") == {feb, mar}
    assert query(created_before="2026-02-01T00:00:00Z") == {jan}
    # 01:00 at +02:00 is 23:00 UTC the day before: February's request is after it
    assert query(created_after="2026-02-01T01:00:00+02:00") == {feb, mar}
    assert query(created_after="2026-01-31T23:00:00-02:00") == {mar}
    assert query(created_after="2027-01-01T00:00:00Z") == set()


@pytest.mark.parametrize("params", [
    {"created_after": "2026-01-01T00:00:00"}, {"created_before": "2026-01-01T10:00:00"},
    {"created_after": "yesterday"}, {"created_before": "2026-13-01T00:00:00Z"},
])
def test_naive_or_bad_timestamps_are_422(client, headers, params):
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_cursor_pagination_newest_first_without_gaps_or_duplicates(client, headers):
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    made = [create(client, headers) for _ in range(25)]
    # five requests share one receipt time: the id breaks the tie
    tie = datetime.now(UTC) - timedelta(hours=1)
    for rid in made[5:10]:
        set_columns(rid, received_at=tie)
    with session_scope() as session:
        rows = session.execute(select(ErasureRequest.received_at, ErasureRequest.id)).all()
    expected = [str(rid) for _, rid in sorted(rows, key=lambda r: (r[0], str(r[1])), reverse=True)]

    pages, cursor = [], None
    while True:
        params = {"limit": 10} if cursor is None else {"limit": 10, "cursor": cursor}
        response = client.get(URL, params=params, headers=headers)
        pages.append(ids(response))
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [rid for page in pages for rid in page]
    assert seen == expected
    assert len(set(seen)) == 25 and set(seen) == set(made)


def test_exact_page_boundary_ends_with_no_cursor(client, headers):
    for _ in range(4):
        create(client, headers)
    first = client.get(URL, params={"limit": 2}, headers=headers).json()
    second = client.get(URL, params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers).json()
    assert len(second["items"]) == 2 and second["next_cursor"] is None
    whole = client.get(URL, params={"limit": 4}, headers=headers).json()
    assert len(whole["items"]) == 4 and whole["next_cursor"] is None


def test_cursor_combines_with_filters(client, headers):
    batch = [create(client, headers, source="batch") for _ in range(5)]
    for _ in range(5):
        create(client, headers, source="portal")
    first = client.get(URL, params={"source": "batch", "limit": 3}, headers=headers).json()
    second = client.get(URL, params={"source": "batch", "limit": 3, "cursor": first["next_cursor"]}, headers=headers).json()
    assert {r["id"] for r in first["items"] + second["items"]} == set(batch)
    assert second["next_cursor"] is None


@pytest.mark.parametrize("limit", [0, -1, 201, 10_000, "many"])
def test_limit_out_of_range_is_422(client, headers, limit):
    response = client.get(URL, params={"limit": limit}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_limit_200_is_allowed(client, headers):
    assert client.get(URL, params={"limit": 200}, headers=headers).status_code == 200


@pytest.mark.parametrize("cursor", [
    "not-a-cursor",
    "%%%",
    base64.urlsafe_b64encode(b"garbage").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00|not-a-uuid").decode(),
    base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode()).decode(),
    base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
])
def test_bad_cursor_is_400(client, headers, cursor):
    response = client.get(URL, params={"cursor": cursor}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 400


def test_cursor_with_a_timezone_offset_pages_correctly(client, headers):
    older, newer = create(client, headers), create(client, headers)
    set_columns(older, received_at=datetime(2026, 5, 1, 10, 0, tzinfo=UTC))
    set_columns(newer, received_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    # a cursor at 11:00 UTC written as 13:00+02:00 must sit between the two
    at = datetime(2026, 5, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    cursor = base64.urlsafe_b64encode(f"{at.isoformat()}|{uuid.UUID(int=0)}".encode()).decode().rstrip("=")
    assert ids(client.get(URL, params={"cursor": cursor}, headers=headers)) == [older]


def test_filter_by_external_id_and_jurisdiction(client, headers):
    gdpr = create(client, headers, external_id="ticket-regime-1")
    ccpa = create(client, headers, jurisdiction="ccpa", external_id="ticket-regime-2")
    lgpd = create(client, headers, jurisdiction="lgpd")
    assert ids(client.get(URL, params={"external_id": "ticket-regime-1"}, headers=headers)) == [gdpr]
    assert ids(client.get(URL, params={"external_id": "ticket-regime"}, headers=headers)) == []  # exact, not a prefix
    assert ids(client.get(URL, params={"jurisdiction": "ccpa"}, headers=headers)) == [ccpa]
    assert ids(client.get(URL, params={"jurisdiction": "lgpd"}, headers=headers)) == [lgpd]
    assert ids(client.get(URL, params={"jurisdiction": "gdpr", "external_id": "ticket-regime-2"}, headers=headers)) == []
    unknown = client.get(URL, params={"jurisdiction": "hipaa"}, headers=headers)
    assert unknown.status_code == 422 and "supported: gdpr" in unknown.json()["detail"]


def test_another_clients_request_is_not_found_by_external_id(client, headers, make_key):
    create(client, headers, external_id="ticket-regime-3")
    other = make_key("requests:read", client="globex")
    assert ids(client.get(URL, params={"external_id": "ticket-regime-3"}, headers=other)) == []


@pytest.mark.parametrize("route", [URL, "/v1/jobs", "/v1/datasets", "/v1/models"])
def test_unknown_query_parameters_answer_422_naming_them(client, make_key, route):
    headers = make_key("requests:read,models:read")
    assert client.get(route, headers=headers).status_code == 200
    response = client.get(route, params={"jurisdicton": "ccpa"}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["unknown_parameters"] == ["jurisdicton"] and "jurisdicton" in body["detail"]
    assert "jurisdicton" not in body["accepted_parameters"]


def test_declared_parameters_are_listed_as_accepted(client, headers):
    body = client.get(URL, params={"stauts": "received"}, headers=headers).json()
    assert {"status", "jurisdiction", "external_id", "limit", "cursor"} <= set(body["accepted_parameters"])


def test_an_unknown_parameter_that_looks_like_an_identifier_is_not_echoed(client, headers):
    response = client.get(URL, params={"jane.doe@example.org": "1"}, headers=headers)
    assert response.status_code == 422
    assert "jane" not in response.text and response.json()["unknown_parameters"] == ["<key>"]
