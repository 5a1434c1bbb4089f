"""Key authentication on a cache miss only reads, and SQLite writers wait as long as PostgreSQL's
lock timeout (issue 20, item 17).

Before: a cache miss opened a write transaction (SQLite's BEGIN IMMEDIATE), so while any writer
held the database every request with an uncached key waited up to 30 s (busy_timeout) behind it,
and held up the writers queued after it.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, text

from app.db import READ_ONLY, get_engine
from app.keys import service as key_service
from tests.conftest import SERVICES

HANG = 20.0  # a generous bound for "did not wait for the writer"; not a speed assertion


def _plaintext(make_key) -> str:
    return make_key("requests:read")["Authorization"].removeprefix("Bearer ")


def test_a_cache_miss_opens_a_read_only_transaction(make_key):
    plaintext = _plaintext(make_key)
    key_service.clear_cache()
    begins: list[bool] = []

    def record(connection) -> None:
        begins.append(bool(connection.get_execution_options().get(READ_ONLY)))

    event.listen(get_engine(), "begin", record)
    try:
        assert key_service.authenticate_cached(plaintext) is not None
    finally:
        event.remove(get_engine(), "begin", record)
    assert begins == [True]


@pytest.mark.skipif(SERVICES, reason="SQLite's write lock; PostgreSQL readers never wait for writers")
def test_a_cache_miss_does_not_wait_for_a_writer(make_key):
    plaintext = _plaintext(make_key)
    key_service.clear_cache()
    writer = sqlite3.connect(get_engine().url.database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            principal = pool.submit(key_service.authenticate_cached, plaintext).result(timeout=HANG)
        assert principal is not None
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def _busy_timeout(database_url: str) -> int:
    from app.db import build_engine

    engine = build_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("PRAGMA busy_timeout")).scalar()
    finally:
        engine.dispose()


@pytest.mark.skipif(SERVICES, reason="SQLite's busy_timeout")
def test_sqlite_waits_for_the_write_lock_as_long_as_postgresql(database_url, settings_env):
    assert _busy_timeout(database_url) == 5000  # write_lock_timeout_seconds, PostgreSQL's lock_timeout
    settings_env(WRITE_LOCK_TIMEOUT_SECONDS="2.5")
    assert _busy_timeout(database_url) == 2500
