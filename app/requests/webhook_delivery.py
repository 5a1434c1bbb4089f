"""The rows of webhook delivery (workers/webhooks.py): lease what is due, towards the callback of
its request. Here, not in app/webhooks/, because the callback address and the client are the
request's, and app/requests/ builds on app/webhooks/. Functions here only flush."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from app.db import utcnow
from app.requests.models import ErasureRequest
from app.webhooks import service as webhook_service
from app.webhooks.types import DueDelivery


def lease_due(session: Session, limit: int, lease: timedelta) -> list[DueDelivery]:
    """The due deliveries, each leased (its next attempt pushed `lease` out) so that no other
    sender takes it while this one waits on the receiver."""
    leased = []
    for delivery in webhook_service.due(session, limit):
        request = session.get_one(ErasureRequest, delivery.request_id)
        delivery.next_attempt_at = utcnow() + lease
        leased.append(DueDelivery(
            # Deliveries exist only for requests with a callback (webhooks.service.notify), which
            # is never cleared; an empty address would be refused by the sender's address check.
            delivery_id=delivery.id, url=request.callback_url or "",
            secret=webhook_service.client_secret(request.client), body=webhook_service.body_bytes(delivery)))
    session.flush()
    return leased
