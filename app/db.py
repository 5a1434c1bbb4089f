"""Engine, sessions and the declarative base.

The database is the source of truth (docs/architecture.md, "The row is the job"). Exactly one place commits: the API's unit of
work (app/deps.py, `run_unit_of_work`, on the endpoint's own thread) or `session_scope()` in
workers and the CLI. Services only flush.
"""

from __future__ import annotations

import functools
import hashlib
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.config import get_settings

# Stable constraint names, so Alembic autogenerate and hand-written migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalise_database_url(raw: str) -> URL:
    """Accept the plain forms users type and pick the driver ourselves."""
    url = make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    elif url.drivername == "sqlite+pysqlite":
        url = url.set(drivername="sqlite")
    return url


# Execution option of a connection whose transaction only reads: on SQLite it begins deferred,
# so it takes no write lock and, in WAL mode, neither waits for a writer nor holds one up.
READ_ONLY = "obliviate_read_only"


def build_engine(raw_url: str) -> Engine:
    url = normalise_database_url(raw_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        settings = get_settings()
        # One connection for every thread that can hold a session at once (the API's threadpool,
        # the intake threads, the metrics thread, an idempotency claim), so no thread waits for
        # a connection that another, itself waiting, holds.
        # A writer waits for the write lock as long as PostgreSQL waits for a lock, then gives up
        # (503 with Retry-After) instead of holding its thread; 0 is no limit there, an hour here.
        wait_seconds = settings.write_lock_timeout_seconds or 3600.0
        engine = create_engine(
            url, hide_parameters=True, connect_args={"timeout": wait_seconds, "check_same_thread": False},
            pool_size=settings.api_threads + settings.intake_threads + 2, max_overflow=8,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # pysqlite's own transaction handling defers BEGIN; we issue BEGIN IMMEDIATE
            # ourselves so writers queue on the lock instead of failing on upgrade.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(wait_seconds * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, hide_parameters=True, pool_size=20, max_overflow=20, pool_recycle=1800)

    @event.listens_for(engine, "checkout")
    def _refuse_closed(dbapi_connection, _record, _proxy):
        # A pooled connection that PostgreSQL has closed (restart, pg_terminate_backend, idle
        # timeout) has a FATAL message or EOF waiting on its socket, although it runs nothing:
        # the pool then replaces it. One poll instead of a ping's round trip on every checkout.
        if closed_by_server(dbapi_connection):
            raise DisconnectionError("connection closed by the server")

    return engine


def closed_by_server(dbapi_connection) -> bool:
    try:
        fd = dbapi_connection.pgconn.socket
    except Exception:  # psycopg refuses to give the socket of a connection it knows is broken
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def create_scratch_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """A new, empty PostgreSQL database named `prefix_<random>` on the server of `admin_url`:
    (its URL, its name). For the test suite and the benchmarks; `drop_database` removes it."""
    import uuid

    from sqlalchemy import text

    admin = normalise_database_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False), name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a database made by `create_scratch_database`, closing its connections."""
    from sqlalchemy import text

    engine = create_engine(normalise_database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


_lock = threading.Lock()
_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    global _engine, _sessionmaker
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = build_engine(get_settings().database_url)
                _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def get_sessionmaker() -> sessionmaker[Session]:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


def dispose_engine() -> None:
    global _engine, _sessionmaker
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
        _sessionmaker = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """The unit of work for workers and the CLI: commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def read_session() -> Session:
    """A session for work that only reads (see READ_ONLY)."""
    return get_sessionmaker()(bind=get_engine().execution_options(**{READ_ONLY: True}))


def is_postgres(session_or_engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


def advisory_xact_lock(session: Session, name: str) -> None:
    """On PostgreSQL, hold a lock named `name` until the transaction ends, so that whoever counts
    after taking it sees what the previous holder committed. On SQLite the transaction's BEGIN
    IMMEDIATE holds the database's write lock already, which serialises every writer."""
    if is_postgres(session):
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        session.connection()


@functools.cache
def insert_skipping_taken(dialect: str, table, index_elements: tuple[str, ...], returning: str) -> Any:
    """`INSERT … ON CONFLICT (index_elements) DO NOTHING RETURNING returning` into `table` on
    PostgreSQL or SQLite: a row whose key is taken is skipped, not an error, so that racing
    writers of one key both end with one row and a usable transaction. Built once per use."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=list(index_elements)).returning(table.c[returning])


def on_commit(session: Session, callback) -> None:
    """Run `callback()` once the session's transaction has committed (never if it rolls back).

    This is how tasks are enqueued: a message must never point at a row that may still vanish."""
    session.info.setdefault("on_commit", []).append(callback)


def on_rollback(session: Session, callback) -> None:
    """Run `callback()` once the session's transaction has rolled back (never if it commits).

    For clean-up that must not happen while the transaction could still commit, and that needs
    its own unit of work (on SQLite it would otherwise wait on this one's write lock)."""
    session.info.setdefault("on_rollback", []).append(callback)


def _run(callbacks) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # the sweepers finish whatever a callback could not
            import logging

            logging.getLogger("obliviate.db").exception("after-transaction callback failed")


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    session.info.pop("on_rollback", None)
    _run(session.info.pop("on_commit", []))


@event.listens_for(Session, "after_rollback")
def _run_on_rollback(session: Session) -> None:
    session.info.pop("on_commit", None)
    _run(session.info.pop("on_rollback", []))


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is worth retrying: the server went away or refused us for now
    (OperationalError), or the driver invalidated the connection under us."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
