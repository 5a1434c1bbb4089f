"""Sending due webhook deliveries. Each attempt is leased first (next_attempt_at pushed out),
sent outside any transaction, then recorded and audited."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx

from app import metrics
from app.db import session_scope, utcnow
from app.requests.models import ErasureRequest
from app.webhooks import service
from app.webhooks.models import WebhookDelivery

log = logging.getLogger("obliviate.webhooks")
LEASE = timedelta(seconds=60)


def deliver_due(limit: int = 50) -> int:
    with session_scope() as session:
        batch = []
        for delivery in service.due(session, limit):
            request = session.get(ErasureRequest, delivery.request_id)
            delivery.next_attempt_at = utcnow() + LEASE
            batch.append((delivery.id, request.callback_url, service.client_secret(request.client), service.body_bytes(delivery)))
    for delivery_id, url, secret, body in batch:
        status, error = None, None
        try:
            response = httpx.post(
                url, content=body, timeout=5.0, follow_redirects=False,
                headers={"Content-Type": "application/json", service.SIGNATURE_HEADER: service.sign(secret, body)},
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        metrics.WEBHOOK_ATTEMPTS.labels(outcome="ok" if status and 200 <= status < 300 else "error").inc()
        with session_scope() as session:
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if delivery is not None and delivery.state == "pending":
                service.record_attempt(session, delivery, status, error)
    return len(batch)
