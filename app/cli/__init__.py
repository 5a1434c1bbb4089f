"""The `obliviate` command line: serve, migrate, manage keys, import requests, verify the audit log."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy.exc import OperationalError

from app import __version__
from app.cli.audit import audit_app
from app.cli.certificate import certificate_app
from app.cli.common import check_secret, console, ensure_schema, err_console
from app.cli.importer import ImportFormat, run_import
from app.cli.keys import keys_app
from app.cli.restore import restore_check
from app.cli.serve import serve
from app.cli.signing_keys import signing_key_app
from app.config import get_settings

cli = typer.Typer(
    name="obliviate", no_args_is_help=True, add_completion=False,
    help=f"Obliviate {__version__}: GDPR/CCPA erasure requests, carried into training data and model weights.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
requests_app = typer.Typer(no_args_is_help=True, help="Erasure requests.")
cli.add_typer(db_app, name="db")
cli.add_typer(keys_app, name="keys")
cli.add_typer(requests_app, name="requests")
cli.add_typer(audit_app, name="audit")
cli.add_typer(certificate_app, name="certificate")
cli.add_typer(signing_key_app, name="signing-key")
cli.command("serve")(serve)
cli.command("restore-check")(restore_check)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply Alembic migrations to OBLIVIATE_DATABASE_URL."""
    from app import migrate
    from app.db import normalise_database_url

    from alembic.runtime.migration import MigrationContext

    from app.db import get_engine

    settings = get_settings()
    migrate.upgrade(settings.database_url, revision)
    with get_engine().connect() as connection:
        current = ", ".join(MigrationContext.configure(connection).get_current_heads()) or "base"
    safe_url = normalise_database_url(settings.database_url).render_as_string(hide_password=True)
    console.print(f"Database at {safe_url} is at revision [bold]{current}[/bold].", soft_wrap=True)


@requests_app.command("import")
def requests_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="JSON Lines or CSV file."),
    client: str = typer.Option("default", "--client", help="The client (tenant) the requests belong to."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="Requests per committed transaction."),
    file_format: ImportFormat = typer.Option(None, "--format", help="jsonl or csv; by default from the file's extension."),
) -> None:
    """Import erasure requests; every record needs an external_id, so a re-run skips what exists."""
    settings = get_settings()
    check_secret(settings)
    ensure_schema(settings)
    result = run_import(file, file_format, client, batch_size)
    console.print(f"Imported {file.name} for client '{client}':", soft_wrap=True, markup=False)
    summary = Table()
    for column in ("created", "existing", "invalid", "conflicts"):
        summary.add_column(column, justify="right")
    summary.add_row(str(result.created), str(result.existing), str(len(result.invalid)), str(len(result.conflicts)))
    console.print(summary)
    for line_number, message in result.invalid[:100]:
        err_console.print(f"line {line_number}: {message}", soft_wrap=True, markup=False)
    if len(result.invalid) > 100:
        err_console.print(f"... and {len(result.invalid) - 100} more invalid lines")
    for line_number in result.conflicts[:100]:
        err_console.print(f"line {line_number}: external_id already used by a request for a different subject")
    if len(result.conflicts) > 100:
        err_console.print(f"... and {len(result.conflicts) - 100} more conflicting lines")
    raise typer.Exit(0 if not (result.invalid or result.conflicts) else 1)


def main() -> None:
    try:
        cli()
    except OperationalError as exc:
        # Reachability problems deserve one line, not a traceback; the driver's message names
        # host and port but never the password.
        err_console.print(f"[red]error:[/red] database unavailable: {str(exc.orig).strip().splitlines()[0]}", soft_wrap=True)
        raise SystemExit(1) from None
