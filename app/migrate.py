"""Applying Alembic migrations from code (CLI, embedded serve, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[1]


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def grant_service_role(connection, role: str) -> None:
    """Give the role the API and workers log in as the row access they need and nothing more.
    Run by the tables' owner after every migration (new tables included). Not owning the tables,
    the role cannot drop or disable triggers; on top of the triggers, it may not change or delete
    audit events (except setting an event's log position) or checkpoints, nor remove a chain head."""
    from sqlalchemy import text

    quote = connection.dialect.identifier_preparer.quote
    grantee = quote(role)
    schema = quote(connection.execute(text("SELECT current_schema()")).scalar_one())
    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {grantee}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {grantee}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {grantee}",
    ]
    present = set(connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )).scalars())
    if "alembic_version" in present:
        statements.append(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {grantee}")
    if {"audit_events", "audit_heads", "audit_checkpoints"} <= present:
        statements += [
            # A table-wide REVOKE also drops column grants, so the column grant comes after it.
            f"REVOKE UPDATE, DELETE ON audit_events, audit_checkpoints FROM {grantee}",
            f"GRANT UPDATE (log_index) ON audit_events TO {grantee}",
            f"REVOKE DELETE ON audit_heads FROM {grantee}",
        ]
    for statement in statements:
        connection.execute(text(statement))
