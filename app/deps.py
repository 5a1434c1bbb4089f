"""Typed dependencies: the one session that commits, and the calling principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import READ_ONLY, get_sessionmaker, is_postgres
from app.errors import Forbidden, Unauthorized
from app.keys import service as key_service
from app.keys.service import Principal

T = TypeVar("T")


async def get_session() -> AsyncIterator[Session]:
    """The request's session. The endpoint's route (app/routing.py, UnitOfWorkRoute) commits or
    rolls it back, and closes it, in the same threadpool call as the endpoint's own work: a
    transaction that took a lock (SQLite's write lock, an advisory lock, FOR UPDATE) must never
    wait for a second thread to release it, since under load every thread can be held by
    requests waiting for that very lock. Runs with scope="function", before the response is sent.

    Async, so that opening it costs no thread hop (a Session touches the database only when
    first used, in the endpoint's thread)."""
    session = get_sessionmaker()()
    try:
        yield session
    except BaseException:
        if session.in_transaction():
            await run_in_threadpool(_rollback_and_close, session)
        raise
    if session.in_transaction():
        # Only an endpoint that did not run through UnitOfWorkRoute gets here: refuse loudly
        # rather than commit across a thread hop.
        await run_in_threadpool(_rollback_and_close, session)
        raise RuntimeError("an endpoint using SessionDep must be on a router with route_class=UnitOfWorkRoute")
    session.close()


def run_unit_of_work(session: Session, work: Callable[[], T], *, reads_only: bool = False) -> T:
    """Run `work`, then commit (or roll back) and close `session`, all on the calling thread.

    A unit that only reads begins deferred on SQLite (no write lock). One that writes on
    PostgreSQL waits at most write_lock_timeout_seconds for a lock and runs no statement longer
    than write_statement_timeout_seconds; past either, the database cancels it and the client
    gets 503 with Retry-After (app/errors.py) instead of a thread held indefinitely."""
    try:
        if reads_only:
            session.connection(execution_options={READ_ONLY: True})
        elif is_postgres(session):
            settings = get_settings()
            session.execute(
                text("SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :statement, true)"),
                {"lock": _milliseconds(settings.write_lock_timeout_seconds),
                 "statement": _milliseconds(settings.write_statement_timeout_seconds)},
            )
        result = work()
        session.commit()
        return result
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _milliseconds(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


def _rollback_and_close(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


class UnitOfWork:
    """The request's unit of work for an async endpoint that does all its blocking work in one
    function: `run` calls it and commits (or rolls back) and closes the session in the same trip
    to the threadpool, before the endpoint returns its response. Intake uses it: a second trip
    for the commit, and a generator dependency around it, cost as much as intake's own work.
    The session touches the database only inside `run`, so nothing is left open when an
    endpoint fails before calling it."""

    def __init__(self) -> None:
        self.session = get_sessionmaker()()

    async def run(self, work: Callable[[], T]) -> T:
        return await in_intake_thread(lambda: run_unit_of_work(self.session, work))


_limiters: dict[int, anyio.CapacityLimiter] = {}


def _intake_limiter() -> anyio.CapacityLimiter:
    threads = get_settings().intake_threads
    if threads not in _limiters:
        _limiters[threads] = anyio.CapacityLimiter(threads)
    return _limiters[threads]


async def in_intake_thread(work: Callable[[], T]) -> T:
    """Run CPU-bound intake work (validating, hashing, rendering a batch) in the threadpool,
    within the intake's thread limit, so that the event loop keeps serving."""
    return await anyio.to_thread.run_sync(work, limiter=_intake_limiter())


async def get_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.", headers={"WWW-Authenticate": "Bearer"})
    # Its own short read, outside the unit of work: on SQLite the unit of work holds the write
    # lock from its first statement, and idempotency claims must be able to run before that.
    # A key seen in the last few seconds answers from memory, without a thread hop.
    token = token.strip()
    found, principal = key_service.cached_principal(token)
    if not found:
        principal = await run_in_threadpool(key_service.authenticate_cached, token)
    if principal is None:
        raise Unauthorized("The API key is not valid or was revoked.", headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = principal
    return principal


def authenticating(check):
    """Marks a dependency that authenticates the caller itself: it calls get_principal instead
    of depending on it, one dependency less to resolve on every request. The OpenAPI document
    marks routes using either as secured."""
    check.authenticates = True
    return check


def require(scope: str):
    @authenticating
    async def _check(request: Request) -> Principal:
        principal = await get_principal(request)
        if not principal.has(scope):
            raise Forbidden(f"This key lacks the '{scope}' scope.")
        return principal

    return Depends(_check)


def scoped(scope: str):
    """`Annotated[Principal, scoped("requests:read")]` — a principal that holds `scope`."""
    return Annotated[Principal, require(scope)]


def any_scope(*scopes: str):
    """A principal holding at least one of `scopes` (e.g. jobs are read by model and request readers)."""

    @authenticating
    async def _check(request: Request) -> Principal:
        principal = await get_principal(request)
        if not any(principal.has(s) for s in scopes):
            raise Forbidden(f"This key needs one of the scopes: {', '.join(scopes)}.")
        return principal

    return Annotated[Principal, Depends(_check)]
