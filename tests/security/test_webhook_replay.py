"""A webhook replayed within the timestamp tolerance (issue 20, item 16).

Before: the signature check alone (timestamp within five minutes, HMAC over it and the body)
accepted the same captured delivery any number of times inside the window, and the docs did
not say what a receiver must keep. The receiver's snippet, examples/webhook_receiver.py (linked
from the webhooks docs), keeps accepted ids for the window and refuses a replay.
"""

from __future__ import annotations

import time

import pytest

from app.audit.chain import canonical_json
from app.webhooks import service
from examples.webhook_receiver import TOLERANCE_SECONDS, Refused, WebhookVerifier

SECRET = "whsec-test"


def _delivery(event_id: str = "evt-1", status: str = "completed") -> bytes:
    return canonical_json({"id": event_id, "type": f"request.{status}", "created": 1,
                           "data": {"request_id": "r-1", "status": status, "external_id": None, "outcome": None}})


def test_the_snippet_checks_what_the_service_signs():
    assert TOLERANCE_SECONDS == service.TOLERANCE_SECONDS
    body = _delivery()
    header = service.sign(SECRET, body)
    assert WebhookVerifier(SECRET).verify(body, header)["id"] == "evt-1"


def test_a_replay_inside_the_window_is_refused():
    verifier = WebhookVerifier(SECRET)
    body, now = _delivery(), int(time.time())
    header = service.sign(SECRET, body, now)
    # The signature check alone accepts the replay: that is what the receiver must add.
    assert service.verify_signature(SECRET, body, header, now + 60)
    verifier.verify(body, header, now)
    with pytest.raises(Refused, match="replayed"):
        verifier.verify(body, header, now + 60)
    # Re-signed with a fresh timestamp (as a retry is) it is still the same event.
    with pytest.raises(Refused, match="replayed"):
        verifier.verify(body, service.sign(SECRET, body, now + 90), now + 90)


def test_a_retry_after_a_failed_handling_is_accepted_once():
    verifier = WebhookVerifier(SECRET)
    body, now = _delivery(), int(time.time())
    event = verifier.verify(body, service.sign(SECRET, body, now), now)
    verifier.forget(event["id"])  # acting on it failed; the receiver answered 500
    assert verifier.verify(body, service.sign(SECRET, body, now + 30), now + 30)["id"] == "evt-1"
    with pytest.raises(Refused, match="replayed"):
        verifier.verify(body, service.sign(SECRET, body, now + 40), now + 40)


@pytest.mark.parametrize("header, problem", [
    ("v1=00", "no timestamp"),
    ("t=1,v1=00", "stale"),
    ("t={now},v1=00", "bad signature"),
])
def test_forged_and_stale_deliveries_are_refused(header, problem):
    now = int(time.time())
    with pytest.raises(Refused, match=problem):
        WebhookVerifier(SECRET).verify(_delivery(), header.format(now=now), now)


def test_ids_are_kept_only_as_long_as_their_timestamps_pass():
    verifier = WebhookVerifier(SECRET)
    now = int(time.time())
    for n in range(50):
        body = _delivery(f"evt-{n}")
        verifier.verify(body, service.sign(SECRET, body, now), now)
    later = now + TOLERANCE_SECONDS + 1
    body = _delivery("evt-late")
    verifier.verify(body, service.sign(SECRET, body, later), later)
    assert list(verifier._seen) == ["evt-late"]
    # The old delivery cannot come back: its timestamp no longer passes.
    old = _delivery("evt-0")
    with pytest.raises(Refused, match="stale"):
        verifier.verify(old, service.sign(SECRET, old, now), later)
