"""Wrapping a creating endpoint in Idempotency-Key semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.idempotency import service
from app.principal import Principal

Handler = Callable[[], tuple[int, Any, dict[str, str]]]

RULES = (
    "Makes a retried POST safe. The same key with the same body replays the first response (with "
    "`Idempotent-Replayed: true`) instead of doing the work again; the same key with another body "
    "answers 422; while the first request with this key is still being processed, 409 (retry shortly). "
    f"A key belongs to the API client and to this operation. 1-{service.MAX_KEY_LENGTH} characters, "
    "not blank (400 otherwise); use one fresh value (a UUID, a ticket number) per intended operation."
)


async def _declare_key(
    # Validated by service.validate_key (400), not here (422): declared for the document only.
    _key: Annotated[str | None, Header(
        alias="Idempotency-Key", description=RULES, examples=["portal-ticket-1234"],
        json_schema_extra={"minLength": 1, "maxLength": service.MAX_KEY_LENGTH},
    )] = None,
) -> None:
    """The header as a parameter of the operation, so that generated clients can send it; the
    handlers read it from the request (the fast intake path needs it before any dependency).
    Async: FastAPI runs a plain function dependency in the threadpool, a thread hop per request
    that had doubled intake's CPU per request (bench/intake.py)."""


# `dependencies=[IdempotencyKeyHeader]` on every POST that creates something and runs `run` below.
IdempotencyKeyHeader = Depends(_declare_key)


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
