"""Errors carry their HTTP status and are rendered in one place as RFC 9457 problem+json.

Bodies never echo request input: validation errors drop pydantic's `input` and `ctx`, since the
input may be a personal identifier, and their locations name only the schema's own fields: a key
the caller made up (an unknown field, a mapping's key) may be one too (`{"jane@example.org": 1}`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("obliviate.errors")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://obliviate.dev/problems/"


class ProblemError(Exception):
    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers
        self.extra = extra


class BadRequest(ProblemError):
    status, title, slug = 400, "Bad request", "bad-request"


class Unauthorized(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ProblemError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class InvalidTransition(ProblemError):
    status, title, slug = 409, "Transition not allowed", "invalid-transition"


class Gone(ProblemError):
    status, title, slug = 410, "Gone", "gone"


class PayloadTooLarge(ProblemError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class Unprocessable(ProblemError):
    status, title, slug = 422, "Unprocessable content", "unprocessable"


class TooManyRequests(ProblemError):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class ServiceUnavailable(ProblemError):
    status, title, slug = 503, "Service unavailable", "unavailable"


def problem_body(status: int, title: str, detail: str, slug: str, **extra: Any) -> dict[str, Any]:
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}


def problem_response(status: int, title: str, detail: str, slug: str, headers=None, **extra) -> JSONResponse:
    return JSONResponse(
        problem_body(status, title, detail, slug, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


# What a field name of the API's own schemas looks like. Anything else in a location came from
# the caller and is replaced.
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
INPUT_KEY = "<key>"


def field_name_or_placeholder(name: str) -> str:
    """A name the caller chose, shown only when it looks like one of the API's own field names."""
    return name if _FIELD_NAME.match(name) else INPUT_KEY


def _safe_loc(error: dict[str, Any]) -> list[Any]:
    loc = list(error.get("loc", ()))
    if error.get("type") == "extra_forbidden" and loc:
        loc[-1] = INPUT_KEY  # the unknown field's name is the caller's input
    return [part if isinstance(part, int) else field_name_or_placeholder(part) if isinstance(part, str) else INPUT_KEY
            for part in loc]


def sanitised_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"loc": _safe_loc(e), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


_HTTP_TITLES = {
    400: ("Bad request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    406: ("Not acceptable", "not-acceptable"),
    413: ("Payload too large", "payload-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError):
        return problem_response(exc.status, exc.title, exc.detail, exc.slug, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        errors = sanitised_validation_errors(list(exc.errors()))
        detail = "The request is not valid: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]
        )
        return problem_response(422, "Validation failed", detail, "validation", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        title, slug = _HTTP_TITLES.get(exc.status_code, ("HTTP error", "http"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(exc.status_code, title, detail, slug, getattr(exc, "headers", None))

    async def _database_unavailable(request: Request, exc: Exception):
        # The database went away (restart, failover, terminated connection, pool exhausted) or,
        # on SQLite, stayed locked: nothing was committed, and a retry can succeed.
        # A write that waited past its lock or statement timeout (app/deps.py) is the same case.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        detail = "The database is not reachable right now; retry shortly."
        if _timed_out(exc):
            detail = "The data this request writes is busy; retry shortly."
        return problem_response(503, "Service unavailable", detail, "unavailable", {"Retry-After": "1"})

    for unavailable in _database_unavailable_errors():
        app.add_exception_handler(unavailable, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal error", "The server could not complete the request.", "internal")


def _timed_out(exc: Exception) -> bool:
    from psycopg import errors

    return isinstance(getattr(exc, "orig", exc), (errors.LockNotAvailable, errors.QueryCanceled))


def _database_unavailable_errors() -> tuple[type[Exception], ...]:
    import psycopg
    from sqlalchemy import exc as sa_exc

    return sa_exc.OperationalError, sa_exc.TimeoutError, psycopg.OperationalError
