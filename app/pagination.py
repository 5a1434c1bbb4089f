"""The one cursor format of every listing: the last row's timestamp and id, newest first. A
cursor is opaque to clients; one that was not made here answers 400."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import BadRequest

T = TypeVar("T")


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


def newest_first_page(session: Session, query: Select[tuple[T]], at: InstrumentedAttribute[datetime],
                      row_id: InstrumentedAttribute[uuid.UUID], limit: int, cursor: str | None) -> tuple[list[T], str | None]:
    """One page of `query`, newest first by (`at`, `row_id`), after `cursor`, with the cursor of
    the next page (None on the last)."""
    if cursor:
        cursor_at, cursor_id = decode_cursor(cursor)
        query = query.where(or_(at < cursor_at, and_(at == cursor_at, row_id < cursor_id)))
    rows = list(session.scalars(query.order_by(at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, at.key), getattr(last, row_id.key))
