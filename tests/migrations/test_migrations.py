"""Alembic migrations: they match the models, and go down and up again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import SERVICES, TEST_DB_URL


@pytest.fixture
def scratch_url(tmp_path, database_url) -> Iterator[str]:
    """An empty database of the pass's kind, apart from the suite's."""
    from app.db import create_scratch_database, drop_database

    if not SERVICES:
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    url, name = create_scratch_database(TEST_DB_URL, "obliviate_scratch")
    try:
        yield url
    finally:
        drop_database(TEST_DB_URL, name)


def table_names(url: str) -> set[str]:
    from app.db import build_engine

    engine = build_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url):
    from app.db import get_engine
    from app.tables import metadata

    with get_engine().connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_one_head():
    from app.migrate import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_downgrade_to_base_and_upgrade_again(scratch_url):
    from app.db import build_engine
    from app.migrate import alembic_config
    from app.tables import metadata

    config = alembic_config(scratch_url)
    command.upgrade(config, "head")
    model_tables = {t.name for t in metadata.sorted_tables}
    assert model_tables <= table_names(scratch_url)

    command.downgrade(config, "base")
    assert table_names(scratch_url) <= {"alembic_version"}

    command.upgrade(config, "head")
    assert model_tables <= table_names(scratch_url)

    # the append-only guard came back with the tables
    engine = build_engine(scratch_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO audit_events (stream, seq, type, at, actor, data, prev_hash, hash) "
                "VALUES ('s', 1, 't', CURRENT_TIMESTAMP, 'a', '{}', 'p', 'h')"
            ))
        for statement in ("UPDATE audit_events SET actor = 'b'", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError):
                with engine.begin() as connection:
                    connection.execute(text(statement))
    finally:
        engine.dispose()
