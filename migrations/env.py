from __future__ import annotations

from alembic import context

from app.config import get_settings
from app.db import build_engine
from app.migrate import grant_service_role
from app.tables import metadata

config = context.config


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def run_migrations_offline() -> None:
    from app.db import normalise_database_url

    context.configure(url=str(normalise_database_url(_url())), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
        role = get_settings().db_service_role
        if role and connection.dialect.name == "postgresql":
            # In the migration's transaction, so a new table is never left without its grants.
            grant_service_role(connection, role)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = build_engine(_url())
    with engine.connect() as connection:
        _migrate(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
