"""Wrapping a creating endpoint in Idempotency-Key semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.idempotency import service
from app.keys.service import Principal

Handler = Callable[[], tuple[int, Any, dict[str, str]]]


def run(
    request: Request, session: Session, principal: Principal, route: str, payload: Any, handler: Handler,
    replayed: Callable[[Any], Any] | None = None,
) -> JSONResponse:
    """Run `handler` once per (client, route, Idempotency-Key). `payload` is the parsed body in
    JSON form, or a function returning it (called only when the request carries a key); the same
    key with another body answers 422, one still in flight 409. `replayed` turns the body into
    what is stored for replays, for a body holding something that must not be stored (a new
    API key's secret)."""
    raw_key = request.headers.get("idempotency-key")
    if raw_key is None:
        status, body, headers = handler()
        return JSONResponse(body, status_code=status, headers=headers)
    scoped = service.scoped_key(route, raw_key)
    digest = service.fingerprint(payload() if callable(payload) else payload)
    replay = service.claim(principal.client, scoped, digest)
    if replay is not None:
        return JSONResponse(replay.body, status_code=replay.status_code, headers={**replay.headers, "Idempotent-Replayed": "true"})
    try:
        status, body, headers = handler()
        service.complete(session, principal.client, scoped, status, replayed(body) if replayed else body, headers)
        session.flush()
    except BaseException:
        session.rollback()
        service.release(principal.client, scoped)
        raise
    return JSONResponse(body, status_code=status, headers=headers)
