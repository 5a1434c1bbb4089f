"""PostgreSQL connections for the event loop: the intake fast path's pool (psycopg_pool).

Everything else in the API uses SQLAlchemy sessions in the threadpool (app/db.py). Storing a new
erasure request is one self-contained statement (app/requests/intake.py), so on PostgreSQL it
runs here instead: on an autocommit connection, awaited on the event loop. That saves the thread
hop, the GIL hand-offs and the BEGIN and COMMIT round trips that a session's transaction costs,
which were most of a request's CPU (bench/intake.py). Such a statement is built from SQLAlchemy
Core and compiled once (`Prepared`); psycopg runs its SQL with plain parameters.

One pool per event loop and database: uvicorn runs one loop per process, while a test client
runs the app on a loop of its own. `close_pools` runs at the app's shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.abc import AdaptContext
from psycopg.types.array import ListBinaryDumper
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql.expression import Executable

from app.config import get_settings
from app.db import closed_by_server, normalise_database_url
from app.errors import ServiceUnavailable

log = logging.getLogger("obliviate.asyncdb")

_DIALECT = psycopg_dialect.dialect()


class Prepared:
    """A Core statement compiled once for psycopg: its SQL and the values that the statement
    itself binds (constants such as `literal(1)`). Compiling costs far more than running: a
    statement run per request is compiled at import, never per call."""

    def __init__(self, statement: Executable):
        compiled = statement.compile(dialect=_DIALECT)
        self.sql: str = compiled.string
        self.constants: dict[str, Any] = {
            name: bind.value for bind, name in compiled.bind_names.items() if not bind.required
        }

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """The parameters of one execution: `values`, with the constants added to it."""
        values.update(self.constants)
        return values


def binary_arrays(context: AdaptContext) -> None:
    """Send lists (array parameters) in PostgreSQL's binary form on this connection or cursor:
    psycopg's text form escapes every element with a regular expression, which dominated a
    batch's parameters."""
    context.adapters.register_dumper(list, ListBinaryDumper)


async def _configure(connection: psycopg.AsyncConnection) -> None:
    binary_arrays(connection)


_pools: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, AsyncConnectionPool]] = {}


def conninfo(database_url: str) -> str | None:
    """The libpq connection string of a PostgreSQL database URL; None for other databases."""
    url = normalise_database_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def pool() -> AsyncConnectionPool | None:
    """The running loop's pool for the configured database, opened on first use; None unless
    the database is PostgreSQL."""
    settings = get_settings()
    info = conninfo(settings.database_url)
    if info is None:
        return None
    loop = asyncio.get_running_loop()
    key = (id(loop), info)
    found = _pools.get(key)
    if found is not None and found[0] is loop:
        return found[1]
    created = AsyncConnectionPool(
        info, min_size=1, max_size=settings.intake_connections, open=False, name="intake",
        kwargs={"autocommit": True}, configure=_configure,
        # A request waits this long for a connection before it is answered 503.
        timeout=settings.intake_connection_timeout,
    )
    await created.open(wait=False)
    _pools[key] = (loop, created)
    return created


async def close_pools() -> None:
    """Close the pools of the running loop (at the app's shutdown)."""
    loop = asyncio.get_running_loop()
    for key, (owner, found) in list(_pools.items()):
        if owner is loop:
            del _pools[key]
            await found.close()


@asynccontextmanager
async def connection(connections: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A live autocommit connection from the pool.

    A database that cannot be reached, here or in the body, answers 503 with Retry-After.
    Whether a statement whose connection broke while it ran was committed cannot be known; as
    for any lost response, the client retries, and an external_id or Idempotency-Key makes the
    retry safe."""
    try:
        for _attempt in range(connections.max_size + 1):
            found = await connections.getconn()
            # As for the sync pool (app/db.py): a connection the server has closed (restart,
            # pg_terminate_backend) has EOF or a FATAL message waiting on its socket; one poll
            # instead of a ping's round trip. Closed here, the pool replaces it.
            if closed_by_server(found):
                await found.close()
                await connections.putconn(found)
                continue
            try:
                yield found
            finally:
                await connections.putconn(found)
            return
        raise psycopg.OperationalError("every pooled connection was closed by the server")
    except (psycopg.OperationalError, PoolTimeout) as exc:
        log.warning("intake database unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable(
            "The database is not reachable right now; retry shortly.", headers={"Retry-After": "1"},
        ) from None


async def fetch_ids(live: psycopg.AsyncConnection, statement: str, params: dict[str, Any]) -> list[Any]:
    """Run one statement and return the first column of its rows."""
    async with live.cursor() as cursor:
        await cursor.execute(statement, params)
        return [row[0] for row in await cursor.fetchall()]
