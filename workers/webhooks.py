"""Sending due webhook deliveries. Each attempt is leased first (next_attempt_at pushed out),
sent outside any transaction, then recorded and audited.

The callback's host is resolved here, at delivery time, and every address it resolves to is
checked (app/webhooks/addresses.py); the connection goes to the checked address itself, with
the original name in the Host header and for TLS (SNI and certificate), so a second, different
DNS answer never takes effect.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx

from app import metrics
from app.db import session_scope
from app.requests import webhook_delivery
from app.webhooks import service
from app.webhooks.addresses import AddressRefused, Resolver, resolve_checked

log = logging.getLogger("obliviate.webhooks")
LEASE = timedelta(seconds=60)
TIMEOUT_SECONDS = 5.0


def deliver_due(limit: int = 50, resolver: Resolver | None = None, transport: httpx.BaseTransport | None = None) -> int:
    """Send what is due. `resolver` and `transport` replace DNS and the network (tests)."""
    with session_scope() as session:
        batch = webhook_delivery.lease_due(session, limit, LEASE)
    for due in batch:
        status, outcome = send(due.url, due.body, {service.SIGNATURE_HEADER: service.sign(due.secret, due.body)},
                               resolver, transport)
        metrics.WEBHOOK_ATTEMPTS.labels(outcome="ok" if outcome == service.DELIVERED else "error").inc()
        with session_scope() as session:
            service.record_attempt(session, due.delivery_id, status, outcome)
    return len(batch)


def send(
    url: str, body: bytes, headers: dict[str, str], resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> tuple[int | None, str]:
    """(status code, outcome class) of one POST. The status is only that of the checked host;
    the outcome is service.DELIVERED, REJECTED, UNREACHABLE or REFUSED, never an exception's name or text."""
    try:
        address, host, port = resolve_checked(url, resolver)
    except AddressRefused:
        log.warning("webhook refused: the callback address is not allowed")
        return None, service.REFUSED
    target = httpx.URL(url)
    default_port = 443 if target.scheme == "https" else 80
    host_header = host if port == default_port else f"{host}:{port}"
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    try:
        with httpx.Client(transport=transport, timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
            response = client.post(
                target.copy_with(host=address), content=body, extensions=extensions,
                headers={"Content-Type": "application/json", "Host": host_header, **headers},
            )
    except httpx.HTTPError:
        return None, service.UNREACHABLE
    return response.status_code, service.DELIVERED if 200 <= response.status_code < 300 else service.REJECTED
