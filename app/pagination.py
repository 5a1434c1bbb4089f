"""The one cursor format of every listing: the last row's timestamp and id, newest first. A
cursor is opaque to clients; one that was not made here answers 400."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from app.errors import BadRequest


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("The cursor is not valid; use next_cursor from a previous page.") from None
