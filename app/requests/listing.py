"""Listing a client's erasure requests: filters and cursor pagination, newest first."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import BadRequest, Unprocessable
from app.keys.service import Principal
from app.requests import lifecycle
from app.requests.models import ErasureRequest


def encode_cursor(request: ErasureRequest) -> str:
    raw = f"{request.received_at.isoformat()}|{request.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, rid = raw.partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(rid)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("The cursor is not valid; use next_cursor from a previous page.") from None


def list_for(
    session: Session, principal: Principal, *, status=None, source=None, overdue=None,
    created_after=None, created_before=None, limit=50, cursor=None,
) -> tuple[list[ErasureRequest], str | None]:
    query = select(ErasureRequest)
    if not principal.is_admin:
        query = query.where(ErasureRequest.client == principal.client)
    if status:
        query = query.where(ErasureRequest.status == status)
    if source:
        query = query.where(ErasureRequest.source == source)
    now = utcnow()
    if overdue is True:
        query = query.where(ErasureRequest.due_at < now, ErasureRequest.status.not_in(lifecycle.TERMINAL))
    elif overdue is False:
        query = query.where(or_(ErasureRequest.due_at >= now, ErasureRequest.status.in_(lifecycle.TERMINAL)))
    for bound in (created_after, created_before):
        if bound is not None and bound.tzinfo is None:
            raise Unprocessable("created_after and created_before need a timezone (e.g. 2026-01-01T00:00:00Z).")
    if created_after is not None:
        query = query.where(ErasureRequest.received_at >= created_after)
    if created_before is not None:
        query = query.where(ErasureRequest.received_at < created_before)
    if cursor:
        at, rid = decode_cursor(cursor)
        query = query.where(
            or_(ErasureRequest.received_at < at, and_(ErasureRequest.received_at == at, ErasureRequest.id < rid))
        )
    rows = list(session.scalars(query.order_by(ErasureRequest.received_at.desc(), ErasureRequest.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
