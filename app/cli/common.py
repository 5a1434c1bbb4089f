"""Pieces every command shares: the consoles and the schema check."""

from __future__ import annotations

import typer
from rich.console import Console

from app import migrate
from app.config import Settings
from app.secret_strength import check_at_start as check_secret_at_start

# Results on stdout, diagnostics on stderr, so `obliviate ... > file` keeps only the results.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_USAGE = 2


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def ensure_schema(settings: Settings) -> None:
    """The embedded default migrates itself (it promises no set-up); an external database is
    migrated by an operator, so there we only refuse to write into an outdated schema."""
    if settings.embedded:
        migrate.upgrade(settings.database_url)
        return
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from app.db import get_engine

    heads = set(ScriptDirectory.from_config(migrate.alembic_config()).get_heads())
    with get_engine().connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        raise fail("the database schema is not current; run `obliviate db upgrade` first.")


def check_secret(settings: Settings) -> None:
    try:
        check_secret_at_start(settings)
    except RuntimeError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
