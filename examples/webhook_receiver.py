"""A webhook receiver's side of Obliviate's signatures, with replays refused. Copy it into the
receiving service; it needs only the standard library.

A delivery carries `Obliviate-Signature: t=<unix seconds>,v1=<hex>`, where v1 is
HMAC-SHA256(the client's webhook secret, "<t>." + the raw body). The timestamp bounds how long
a captured delivery can be replayed (five minutes); within that window only the event's `id`
tells a replay from a new event, so the receiver keeps the ids it has accepted for as long as
their timestamps could still pass. A retry carries the same id: when acting on an event fails
(the receiver answers an error, so Obliviate retries), forget() its id so the retry is taken.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

TOLERANCE_SECONDS = 300


class Refused(Exception):
    """The delivery must not be acted on: answer 400 and do nothing."""


class WebhookVerifier:
    """verify() a delivery before acting on it. Keep one per process; with several processes
    behind a load balancer, keep the ids in a shared store instead (a table with a unique id,
    or Redis SET NX with a TTL of twice the tolerance)."""

    def __init__(self, secret: str, tolerance_seconds: int = TOLERANCE_SECONDS):
        self._secret = secret.encode()
        self._tolerance = tolerance_seconds
        self._seen: dict[str, int] = {}  # event id → the signed timestamp it was accepted with
        self._lock = threading.Lock()

    def verify(self, body: bytes, signature_header: str, now: float | None = None) -> dict:
        """The event of an authentic, fresh, first-seen delivery; Refused otherwise."""
        now = int(time.time() if now is None else now)
        fields = dict(item.split("=", 1) for item in signature_header.split(",") if "=" in item)
        try:
            signed_at = int(fields["t"])
        except (KeyError, ValueError):
            raise Refused("no timestamp") from None
        if abs(now - signed_at) > self._tolerance:
            raise Refused("stale or future timestamp")
        expected = hmac.new(self._secret, f"{signed_at}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("v1", "")):
            raise Refused("bad signature")
        event = json.loads(body)
        with self._lock:
            # An id older than the window can no longer pass the timestamp check: forget it.
            self._seen = {key: at for key, at in self._seen.items() if now - at <= self._tolerance}
            if event["id"] in self._seen:
                raise Refused("replayed event")
            self._seen[event["id"]] = signed_at
        return event

    def forget(self, event_id: str) -> None:
        """Acting on this event failed: accept its retry."""
        with self._lock:
            self._seen.pop(event_id, None)
