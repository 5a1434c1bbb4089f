"""Review transitions: every action from every status, reasons, release, extension, actors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import select

from tests import objects
from tests.factories import set_columns, trail

URL = "/v1/erasure-requests"

STATUSES = [
    "received", "approved", "on_hold", "denied", "cancelled",
    "scheduled", "processing", "verifying", "completed", "failed",
]
WORKER_OWNED = {"scheduled", "processing", "verifying", "completed", "failed"}
ACTION_BODIES = {
    "approve": objects.OVERRIDE,
    "deny": {"reason": "identity could not be confirmed"},
    "cancel": None,
    "hold": {"reason": "legal hold pending"},
    "release": None,
    "extend": {"days": 14, "reason": "complex request"},
}
EVENT_TYPES = {
    "approve": "request.approved", "deny": "request.denied", "cancel": "request.cancelled",
    "hold": "request.held", "release": "request.released", "extend": "request.extended",
}
# What the service promises, written out independently of app.requests.lifecycle:
# action → {status it may start from: status it leads to}.
ALLOWED = {
    "approve": {"received": "approved"},
    "deny": {"received": "denied", "on_hold": "denied"},
    "cancel": {"received": "cancelled", "approved": "cancelled", "on_hold": "cancelled", "scheduled": "cancelled"},
    "hold": {"received": "on_hold", "approved": "on_hold", "scheduled": "on_hold"},
    "release": {"on_hold": "received"},
    "extend": {s: s for s in ("received", "approved", "on_hold", "scheduled", "processing", "verifying")},
}


request_body = partial(objects.request_body, "life", source="admin")


def key_id(headers) -> str:
    from app.db import session_scope
    from app.keys.models import ApiKey
    from app.keys.service import hash_key

    token = headers["Authorization"].split(" ", 1)[1]
    with session_scope() as session:
        return str(session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(token))))


def act(client, headers, request_id, action, body=None):
    payload = ACTION_BODIES[action] if body is None else body
    return client.post(f"{URL}/{request_id}/{action}", json=payload, headers=headers)


def request_in(client, headers, status: str) -> str:
    """A request in `status`: driven through the API, or set on the row for worker-owned statuses."""
    rid = client.post(URL, json=request_body(), headers=headers).json()["id"]
    route = {"approved": "approve", "on_hold": "hold", "denied": "deny", "cancelled": "cancel"}
    if status in route:
        assert act(client, headers, rid, route[status]).status_code == 200
    elif status in WORKER_OWNED:
        now = datetime.now(UTC)
        values = {"status": status, "updated_at": now}
        if status in ("completed", "failed"):
            values["completed_at"] = now
        set_columns(rid, **values)
    assert client.get(f"{URL}/{rid}", headers=headers).json()["status"] == status
    return rid


@pytest.mark.parametrize("status", STATUSES)
def test_every_action_from_every_status(client, headers, status):
    for action in ACTION_BODIES:
        check_action(client, headers, status, action)


def check_action(client, headers, status, action):
    rid = request_in(client, headers, status)
    before = trail(client, headers, rid)["events"]
    response = act(client, headers, rid, action)
    after = trail(client, headers, rid)
    target = ALLOWED[action].get(status)
    if target is not None:
        assert response.status_code == 200, (action, response.text)
        assert response.json()["status"] == target
        assert client.get(f"{URL}/{rid}", headers=headers).json()["status"] == target
        assert len(after["events"]) == len(before) + 1
        event = after["events"][-1]
        assert event["type"] == EVENT_TYPES[action]
        assert event["actor"] == f"key:{key_id(headers)}"
        if action != "extend":
            assert (event["data"]["from"], event["data"]["to"]) == (status, target)
        assert after["chain_valid"] is True
    else:
        assert response.status_code == 409, (action, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 409
        assert problem["current_status"] == status
        assert {"type", "title", "detail"} <= set(problem)
        assert client.get(f"{URL}/{rid}", headers=headers).json()["status"] == status
        assert after["events"] == before


@pytest.mark.parametrize("action", ["deny", "hold"])
@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": None}, {"reason": "x" * 2001}])
def test_deny_and_hold_need_a_reason(client, headers, action, body):
    rid = request_in(client, headers, "received")
    if body is None:
        response = client.post(f"{URL}/{rid}/{action}", headers=headers)
    else:
        response = client.post(f"{URL}/{rid}/{action}", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"{URL}/{rid}", headers=headers).json()["status"] == "received"
    assert len(trail(client, headers, rid)["events"]) == 1


def test_reason_is_kept_with_the_decision(client, headers):
    rid = request_in(client, headers, "received")
    denied = act(client, headers, rid, "deny", {"reason": "duplicate of ticket 12"})
    assert denied.json()["status_reason"] == "duplicate of ticket 12"
    assert denied.json()["decided_at"] is not None
    assert trail(client, headers, rid)["events"][-1]["data"]["reason"] == "duplicate of ticket 12"


# A held scheduled request leaves its unlearning batch, so its release plans it again: it
# returns as approved, not as scheduled into a batch it is no longer part of.
@pytest.mark.parametrize(("held_from", "released_to"), [
    ("received", "received"), ("approved", "approved"), ("scheduled", "approved"),
])
def test_release_returns_to_the_status_the_hold_started_from(client, headers, held_from, released_to):
    rid = request_in(client, headers, held_from)
    assert act(client, headers, rid, "hold").json()["status"] == "on_hold"
    released = act(client, headers, rid, "release")
    assert released.status_code == 200
    assert released.json()["status"] == released_to
    events = trail(client, headers, rid)["events"]
    assert events[-1]["type"] == "request.released"
    assert (events[-1]["data"]["from"], events[-1]["data"]["to"]) == ("on_hold", released_to)
    # a second hold/release cycle from there returns to the same place
    assert act(client, headers, rid, "hold").status_code == 200
    assert act(client, headers, rid, "release").json()["status"] == released_to


def test_approve_after_release_of_a_received_hold(client, headers):
    rid = request_in(client, headers, "on_hold")
    assert act(client, headers, rid, "approve").status_code == 409
    assert act(client, headers, rid, "release").json()["status"] == "received"
    assert act(client, headers, rid, "approve").json()["status"] == "approved"


@pytest.mark.parametrize("days", [1, 37, 60])
def test_extend_moves_due_at_by_exactly_the_days(client, headers, days):
    rid = request_in(client, headers, "received")
    before = client.get(f"{URL}/{rid}", headers=headers).json()
    response = act(client, headers, rid, "extend", {"days": days, "reason": "complex request"})
    assert response.status_code == 200, response.text
    after = response.json()
    old_due, new_due = datetime.fromisoformat(before["due_at"]), datetime.fromisoformat(after["due_at"])
    assert new_due - old_due == timedelta(days=days)
    assert after["extended_days"] == days
    assert after["status"] == "received"
    assert after["days_left"] - before["days_left"] in (days - 1, days)
    event = trail(client, headers, rid)["events"][-1]
    assert event["type"] == "request.extended"
    assert event["data"]["days"] == days
    assert event["data"]["reason"] == "complex request"
    assert datetime.fromisoformat(event["data"]["from_due_at"]) == old_due
    assert datetime.fromisoformat(event["data"]["to_due_at"]) == new_due
    assert event["actor"] == f"key:{key_id(headers)}"


@pytest.mark.parametrize("body", [
    {"days": 0, "reason": "r"}, {"days": 61, "reason": "r"}, {"days": -5, "reason": "r"},
    {"days": 365, "reason": "r"}, {"days": 10}, {"days": 10, "reason": ""}, {"reason": "r"},
    {"days": "ten", "reason": "r"}, {"days": 10.5, "reason": "r"}, {"days": 10, "reason": "r", "extra": 1},
])
def test_extend_refuses_bad_days_and_missing_reason(client, headers, body):
    rid = request_in(client, headers, "received")
    due = client.get(f"{URL}/{rid}", headers=headers).json()["due_at"]
    response = client.post(f"{URL}/{rid}/extend", json=body, headers=headers)
    assert response.status_code == 422, response.text
    current = client.get(f"{URL}/{rid}", headers=headers).json()
    assert current["due_at"] == due and current["extended_days"] is None


def test_extend_only_once(client, headers):
    rid = request_in(client, headers, "approved")
    assert act(client, headers, rid, "extend", {"days": 5, "reason": "first"}).status_code == 200
    due = client.get(f"{URL}/{rid}", headers=headers).json()["due_at"]
    again = act(client, headers, rid, "extend", {"days": 5, "reason": "second"})
    assert again.status_code == 409
    assert again.json()["current_status"] == "approved"
    assert client.get(f"{URL}/{rid}", headers=headers).json()["due_at"] == due
    assert [e["type"] for e in trail(client, headers, rid)["events"]].count("request.extended") == 1


def test_extension_survives_hold_and_release(client, headers):
    rid = request_in(client, headers, "received")
    extended = act(client, headers, rid, "extend", {"days": 20, "reason": "r"}).json()
    act(client, headers, rid, "hold")
    released = act(client, headers, rid, "release").json()
    assert released["due_at"] == extended["due_at"]
    assert act(client, headers, rid, "extend", {"days": 1, "reason": "r"}).status_code == 409


def test_review_actions_record_each_actor(client, make_key):
    first, second = make_key(client="acme"), make_key(client="acme")
    rid = client.post(URL, json=request_body(), headers=first).json()["id"]
    assert act(client, second, rid, "hold").status_code == 200
    assert act(client, first, rid, "release").status_code == 200
    assert act(client, second, rid, "approve").status_code == 200
    assert act(client, first, rid, "extend").status_code == 200
    events = trail(client, first, rid)["events"]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("request.received", f"key:{key_id(first)}"),
        ("request.held", f"key:{key_id(second)}"),
        ("request.released", f"key:{key_id(first)}"),
        ("request.approved", f"key:{key_id(second)}"),
        ("request.extended", f"key:{key_id(first)}"),
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]


def test_terminal_decisions_record_completion_time(client, headers):
    for action in ("deny", "cancel"):
        rid = request_in(client, headers, "received")
        decided = act(client, headers, rid, action).json()
        assert decided["completed_at"] is not None
        assert act(client, headers, rid, "approve").status_code == 409
