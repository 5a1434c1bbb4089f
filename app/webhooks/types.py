"""What the webhook sender receives from the app: plain data, so the worker holds no row while it
waits on a receiver."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class DueDelivery:
    """One leased attempt: where to send it, the client's signing secret and the exact body."""

    delivery_id: uuid.UUID
    url: str
    secret: str
    body: bytes
