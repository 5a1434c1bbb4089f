"""The `obliviate` command line: serve, migrate, manage keys, import requests, verify the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy.exc import OperationalError

from app import __version__
from app.cli.certificate import certificate_app
from app.cli.common import EXIT_USAGE, check_secret, console, ensure_schema, err_console, fail
from app.cli.importer import ImportFormat, run_import
from app.cli.keys import keys_app
from app.cli.serve import serve
from app.config import get_settings

cli = typer.Typer(
    name="obliviate", no_args_is_help=True, add_completion=False,
    help=f"Obliviate {__version__}: GDPR/CCPA erasure requests, carried into training data and model weights.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
requests_app = typer.Typer(no_args_is_help=True, help="Erasure requests.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
cli.add_typer(db_app, name="db")
cli.add_typer(keys_app, name="keys")
cli.add_typer(requests_app, name="requests")
cli.add_typer(audit_app, name="audit")
cli.add_typer(certificate_app, name="certificate")
cli.command("serve")(serve)


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
    for column in ("created", "existing", "invalid"):
        summary.add_column(column, justify="right")
    summary.add_row(str(result.created), str(result.existing), str(len(result.invalid)))
    console.print(summary)
    for line_number, message in result.invalid[:100]:
        err_console.print(f"line {line_number}: {message}", soft_wrap=True, markup=False)
    if len(result.invalid) > 100:
        err_console.print(f"... and {len(result.invalid) - 100} more invalid lines")
    raise typer.Exit(0 if not result.invalid else 1)


@audit_app.command("verify")
def audit_verify(
    file: Path = typer.Option(None, "--file", exists=True, dir_okay=False, help="Verify an exported trail (the JSON of GET /v1/erasure-requests/{id}/audit) offline, without the database."),
    head: str = typer.Option(None, "--head", help="With --file: the chain head you hold from elsewhere (e.g. a certificate); catches a dropped tail."),
) -> None:
    """Verify every audit chain; exit 0 only if all of them are intact."""
    if file is not None:
        raise typer.Exit(_verify_file(file, head))
    from app.audit.router import build_report
    from app.db import session_scope

    ensure_schema(get_settings())
    with session_scope() as session:
        report = build_report(session)
    summary = Table()
    for column in ("chains", "events", "broken"):
        summary.add_column(column, justify="right")
    summary.add_row(str(report.chains), str(report.events), str(len(report.broken)))
    console.print(summary)
    if report.valid:
        console.print("[green]Every chain verifies.[/green]")
        return
    console.print("[red]Broken chains, each at its first bad link:[/red]")
    broken = Table()
    broken.add_column("stream", no_wrap=True)
    broken.add_column("seq", justify="right")
    broken.add_column("problem")
    for link in report.broken[:20]:
        broken.add_row(link.stream, str(link.seq), link.problem or "")
    console.print(broken)
    raise typer.Exit(1)


def _verify_file(path: Path, expected_head: str | None) -> int:
    from app.audit.chain import verify_chain

    try:
        trail = json.loads(path.read_text(encoding="utf-8"))
        stream = f"request:{trail['request_id']}"
        events = trail["events"]
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            raise TypeError("events is not a list of objects")
        result = verify_chain(stream, events)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"{path} is not an exported audit trail ({type(exc).__name__}).", EXIT_USAGE) from None
    if result.valid and expected_head is not None and result.head != expected_head.strip().lower():
        console.print(f"[red]{stream}: the events verify but end at {result.head}, not at the given head[/red]", soft_wrap=True)
        return 1
    if result.valid:
        console.print(f"[green]{stream}: {result.length} events verify; head {result.head}[/green]", soft_wrap=True)
        return 0
    console.print(f"[red]{stream}: broken at seq {result.broken_at_seq}: {result.problem}[/red]", soft_wrap=True)
    return 1


def main() -> None:
    try:
        cli()
    except OperationalError as exc:
        # Reachability problems deserve one line, not a traceback; the driver's message names
        # host and port but never the password.
        err_console.print(f"[red]error:[/red] database unavailable: {str(exc.orig).strip().splitlines()[0]}", soft_wrap=True)
        raise SystemExit(1) from None
