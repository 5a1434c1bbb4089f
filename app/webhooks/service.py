"""Status-change webhooks, signed like Stripe's: header `Obliviate-Signature: t=<unix>,v1=<hex>`
where v1 = HMAC-SHA256(client webhook secret, "<t>.<raw body>")."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.audit.chain import canonical_json
from app.config import get_settings
from app.db import utcnow
from app.webhooks.models import WebhookDelivery

SIGNATURE_HEADER = "Obliviate-Signature"
TOLERANCE_SECONDS = 300
# What an attempt's audit event says happened: a class, never the receiver's status code or an
# exception, so the trail a client reads cannot map which addresses and ports answer.
DELIVERED, REJECTED, UNREACHABLE, REFUSED = "delivered", "rejected", "unreachable", "refused"


def client_secret(client: str) -> str:
    """Each client's signing secret, derived from the server secret (nothing more to store)."""
    return hmac.new(get_settings().resolved_secret_key(), f"webhook:{client}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, now: int | None = None) -> bool:
    """What a receiver does: recompute v1 over the timestamp and body; refuse stale timestamps."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or int(time.time())) - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def notify(session: Session, request, event: str) -> None:
    if not request.callback_url:
        return
    payload = {
        "id": str(uuid.uuid4()), "type": event, "created": int(time.time()),
        "data": {"request_id": str(request.id), "status": request.status, "external_id": request.external_id,
                 "outcome": request.outcome},
    }
    session.add(WebhookDelivery(
        request_id=request.id, event=event, payload=payload, state="pending", attempts=0,
        next_attempt_at=utcnow(), created_at=utcnow(),
    ))


def due(session: Session, limit: int = 50) -> list[WebhookDelivery]:
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= utcnow())
        .order_by(WebhookDelivery.next_attempt_at).limit(limit).with_for_update(skip_locked=True)
    ))


def record_attempt(session: Session, delivery_id: uuid.UUID, status: int | None, outcome: str) -> None:
    """`status` is the checked receiver's answer (kept for the operator); `outcome` one of the four
    classes above. Nothing is recorded for a delivery no longer pending (another sender's lease
    expired into this one's, and it recorded first)."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.state != "pending":
        return
    delivery.attempts += 1
    delivery.last_status, delivery.last_error = status, None if outcome == DELIVERED else outcome
    if outcome == DELIVERED:
        delivery.state = "delivered"
    elif delivery.attempts >= get_settings().webhook_max_attempts:
        delivery.state = "failed"
    else:
        delivery.next_attempt_at = utcnow() + timedelta(seconds=min(3600, 5 * 2 ** delivery.attempts))
    audit_service.append(
        session, audit_service.request_stream(delivery.request_id), "webhook.attempted", "worker",
        {"delivery_id": str(delivery.id), "event": delivery.event, "attempt": delivery.attempts,
         "outcome": outcome, "state": delivery.state},
    )


def body_bytes(delivery: WebhookDelivery) -> bytes:
    return canonical_json(delivery.payload)
