"""`obliviate restore-check`: after restoring the database from a backup, re-apply every erasure
that completed after the backup was taken (docs/operations.md, "Backup and restore")."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from app.cli.common import check_secret, console, ensure_schema, err_console
from app.config import get_settings

WAIT_POLL_SECONDS = 2.0


def restore_check(
    wait: float = typer.Option(0, "--wait", min=0, help="Seconds to wait for the workers to finish the re-applied "
                                                        "erasures; 0 returns once they are queued."),
) -> None:
    """Compare the database with the erasure log kept outside it, and re-apply (data, weights,
    references) every erasure the database no longer holds. Exit 1 when an entry is unusable or
    an erasure could not be re-applied."""
    from app.audit import erasure_log
    from app.db import session_scope
    from app.restore import service

    settings = get_settings()
    check_secret(settings)
    ensure_schema(settings)
    entries, unusable = erasure_log.read_all()
    with session_scope() as session:
        position = service.log_position(session)
    findings = []
    for entry in entries:
        try:
            with session_scope() as session:
                findings.append(service.check(session, entry))
        except Exception as exc:  # one entry's failure must not keep the others from being re-applied
            finding = service.Finding(entry, None, problem=f"{type(exc).__name__} while re-applying")
            err_console.print(f"request {entry.request_id}: {type(exc).__name__}: {exc}", soft_wrap=True, markup=False)
            findings.append(finding)
    if wait:
        _wait_for(findings, wait)
    _report(position, findings, unusable)
    raise typer.Exit(1 if unusable or any(f.problem for f in findings) else 0)


def _wait_for(findings, seconds: float) -> None:
    from app.db import session_scope
    from app.requests.lifecycle import TERMINAL
    from app.requests.models import ErasureRequest

    pending = {f.reapplied_as: f for f in findings if f.reapplied_as and f.reapplied_status not in TERMINAL}
    deadline = time.monotonic() + seconds
    while pending:
        with session_scope() as session:
            for request_id, finding in list(pending.items()):
                finding.reapplied_status = session.get(ErasureRequest, request_id).status
                if finding.reapplied_status in TERMINAL:
                    if finding.reapplied_status != "completed":
                        finding.problem = f"its re-application ended {finding.reapplied_status}"
                    del pending[request_id]
        if pending and time.monotonic() >= deadline:
            for finding in pending.values():
                finding.problem = f"still {finding.reapplied_status} after {seconds:g} s"
            return
        if pending:
            time.sleep(WAIT_POLL_SECONDS)


def _report(position, findings, unusable) -> None:
    published = "none" if position.published_size is None else str(position.published_size)
    console.print(f"Audit log: {position.database_size} events in the database; newest published checkpoint: "
                  f"{published}.", soft_wrap=True)
    if position.behind:
        console.print("[yellow]The database ends before a checkpoint published outside it: it was restored "
                      "from a backup.[/yellow]", soft_wrap=True)
    table = Table(title=f"Erasure log: {len(findings)} completed erasure(s)")
    for column in ("request", "client", "completed", "in database", "datasets", "models",
                   "tombstones missing", "action", "re-applied as"):
        table.add_column(column, justify="right" if column in ("datasets", "models", "tombstones missing") else "left",
                         no_wrap=column in ("request", "re-applied as"))
    for f in findings:
        table.add_row(
            str(f.entry.request_id), f.entry.client, f.entry.completed_at.strftime("%Y-%m-%d %H:%M:%S"),
            f.status_in_database or "missing", str(f.datasets), str(f.models), str(f.tombstones_missing),
            f"[red]{f.action}: {f.problem}[/red]" if f.problem else f.action,
            str(f.reapplied_as) if f.reapplied_as else "",
        )
    console.print(table)
    for name, problem in unusable:
        err_console.print(f"[red]unusable entry[/red] {name}: {problem}", soft_wrap=True, highlight=False)
    reapplied = sum(1 for f in findings if f.created)
    console.print(f"{reapplied} erasure(s) re-applied now; {sum(1 for f in findings if f.problem)} could not be; "
                  f"{len(unusable)} unusable entr{'y' if len(unusable) == 1 else 'ies'}.", soft_wrap=True)
