"""Test wiring. One suite, two passes:

- embedded: a SQLite file and the SQLite-backed broker (the default; needs no services);
- services: PostgreSQL and Redis, when OBLIVIATE_TEST_DATABASE_URL (and OBLIVIATE_TEST_REDIS_URL)
  are set. `.ci/run` sets them; an unreachable service then fails the run instead of skipping.

Each pass migrates a fresh database with Alembic (no create_all) and empties it between tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

TEST_SECRET = "test-secret-key-for-pseudonyms-0123456789"
TEST_DB_URL = os.environ.get("OBLIVIATE_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("OBLIVIATE_TEST_REDIS_URL", "")
SERVICES = bool(TEST_DB_URL)
# The shared keys and fixtures of tests/factories.py, in every test file without an import.
pytest_plugins = ["tests.factories"]


def pytest_report_header(config):
    if SERVICES:
        return f"obliviate: services pass (PostgreSQL {make_url(TEST_DB_URL).host}, broker {'redis' if TEST_REDIS_URL else 'embedded'})"
    return "obliviate: embedded pass (SQLite, SQLite-backed broker)"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("obliviate-data")
    os.environ["OBLIVIATE_DATA_DIR"] = str(data_dir)
    os.environ["OBLIVIATE_SECRET_KEY"] = TEST_SECRET
    pg_name = None
    if SERVICES:
        from app.db import create_scratch_database

        url, pg_name = create_scratch_database(TEST_DB_URL, "obliviate_test")
    else:
        url = f"sqlite:///{data_dir / 'obliviate.db'}"
    os.environ["OBLIVIATE_DATABASE_URL"] = url
    os.environ["OBLIVIATE_BROKER_URL"] = TEST_REDIS_URL or f"sqla+sqlite:///{data_dir / 'broker.db'}"
    from app import config, db, migrate

    config.reset_settings()
    db.dispose_engine()
    migrate.upgrade(url)
    if not SERVICES:
        _capture_sqlite_guards()
    yield url
    db.dispose_engine()
    if pg_name:
        from app.db import drop_database

        drop_database(TEST_DB_URL, pg_name)


# The append-only triggers of the migrated SQLite schema, (name, CREATE statement), captured once:
# tests that play an attacker drop them, and every test starts with all of them in place again.
SQLITE_GUARDS: list[tuple[str, str]] = []


def _capture_sqlite_guards() -> None:
    from app.db import get_engine

    with get_engine().connect() as connection:
        SQLITE_GUARDS[:] = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()


def drop_sqlite_guards(connection) -> None:
    for name, _sql in SQLITE_GUARDS:
        connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def restore_sqlite_guards(connection) -> None:
    drop_sqlite_guards(connection)
    for _name, sql in SQLITE_GUARDS:
        connection.execute(text(sql))


def _empty_tables(url: str) -> None:
    from app.db import get_engine
    from app.tables import metadata

    engine = get_engine()
    names = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # replica mode skips the append-only triggers, as a superuser's maintenance would.
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            # DELETE, not TRUNCATE: on these nearly empty tables TRUNCATE costs ~20 ms per table
            # (new files for every relation) and would dominate the services pass. Replica mode
            # also skips the foreign-key triggers, so the order does not matter.
            for name in names:
                connection.execute(text(f'DELETE FROM "{name}"'))
            sequences = connection.execute(text(
                "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
                "JOIN pg_class t ON d.refobjid = t.oid WHERE s.relkind = 'S' AND t.relname = ANY(:names)"
            ), {"names": names}).scalars().all()
            for sequence in sequences:
                connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        else:
            drop_sqlite_guards(connection)
            for name in names:
                connection.execute(text(f"DELETE FROM {name}"))
            restore_sqlite_guards(connection)


@pytest.fixture(autouse=True)
def clean_state(request) -> Iterator[None]:
    if "database_url" not in request.fixturenames and not request.node.get_closest_marker("db"):
        yield
        return
    url = request.getfixturevalue("database_url")
    from app.config import get_settings, reset_settings
    from app.identities.service import forget_seen_known
    from app.keys.service import clear_cache

    reset_settings()
    clear_cache()
    forget_seen_known()
    _empty_tables(url)
    # Published checkpoints describe the emptied log: a test starts with none, as its tables do.
    shutil.rmtree(Path(get_settings().artifacts_url) / "checkpoints", ignore_errors=True)
    yield


@pytest.fixture
def settings_env(monkeypatch):
    """Set OBLIVIATE_* variables for one test: settings_env(AUTO_APPROVE_VERIFIED="true")."""
    from app.config import reset_settings

    def apply(**values):
        for key, value in values.items():
            monkeypatch.setenv(f"OBLIVIATE_{key}", str(value))
        reset_settings()

    yield apply
    monkeypatch.undo()
    reset_settings()


@pytest.fixture
def app(database_url):
    from app.main import create_app

    return create_app()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def make_key(database_url):
    """make_key("requests:write,requests:read", client="acme") → headers with a fresh key."""
    from app.db import session_scope
    from app.keys import service

    def create(scopes: str = "requests:write,requests:read,requests:review", client: str = "acme", name: str | None = None):
        with session_scope() as session:
            _key, plaintext = service.create_key(session, name or f"{client}-{uuid.uuid4().hex[:6]}", scopes.split(","), client=client)
        return {"Authorization": f"Bearer {plaintext}"}

    return create


@pytest.fixture
def headers(make_key):
    return make_key("requests:write,requests:read,requests:review")


@pytest.fixture
def data_dir(database_url) -> Path:
    return Path(os.environ["OBLIVIATE_DATA_DIR"])


@pytest.fixture(scope="module")
def worker(database_url, tmp_path_factory):
    """A Celery worker with beat on the test database and broker, for the module's tests."""
    from tests.worker import Worker

    process = Worker(tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def inference_worker(database_url, tmp_path_factory):
    """A Celery worker on the inference queue only (no beat, no jobs): predictions answer, and
    the module's queued jobs stay queued."""
    from tests.worker import Worker

    process = Worker(tmp_path_factory.mktemp("inference") / "worker.log", queues="inference", beat=False).start()
    yield process
    process.stop()
