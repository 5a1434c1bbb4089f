"""`obliviate audit verify|checkpoint`: check the audit chains and the log's signed checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import EXIT_USAGE, console, ensure_schema, err_console, fail
from app.config import get_settings

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@audit_app.command("verify")
def audit_verify(
    file: Path = typer.Option(None, "--file", exists=True, dir_okay=False, help="Verify an exported trail (the JSON of GET /v1/erasure-requests/{id}/audit) offline, without the database."),
    head: str = typer.Option(None, "--head", help="With --file: a chain head you hold from elsewhere (a certificate's audit_chain.head, an earlier export); the trail must contain it, which catches a dropped tail."),
    checkpoint: list[Path] = typer.Option(None, "--checkpoint", exists=True, dir_okay=False, help="A checkpoint you kept (GET /v1/audit/checkpoints/latest): the log must still extend it. Repeatable."),
) -> None:
    """Verify every audit chain, the log against every checkpoint, and every certificate; exit 0
    only if all of it holds."""
    if file is not None:
        if checkpoint:
            raise fail("--checkpoint checks the whole log: use it without --file.", EXIT_USAGE)
        raise typer.Exit(_verify_file(file, head))
    from app.integrity.service import build_report
    from app.db import session_scope

    held = []
    for path in checkpoint or []:
        try:
            held.append((f"checkpoint file {path.name}", path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            raise fail(f"{path} is not a readable checkpoint.", EXIT_USAGE) from None
    ensure_schema(get_settings())
    with session_scope() as session:
        report = build_report(session, held)
    summary = Table()
    for column in ("chains", "events", "broken", "in log", "checkpoints", "certificates"):
        summary.add_column(column, justify="right")
    summary.add_row(str(report.chains), str(report.events), str(len(report.broken)), str(report.log.tree_size),
                    str(report.log.checkpoints), str(report.log.certificates))
    console.print(summary)
    if report.log.unsequenced or report.log.unanchored_certificates:
        console.print(f"{report.log.unsequenced} events and {report.log.unanchored_certificates} certificates "
                      "await their first checkpoint.", soft_wrap=True)
    if report.valid:
        console.print("[green]Every chain verifies, and the log extends every checkpoint.[/green]")
        return
    if report.broken:
        console.print("[red]Broken chains, each at its first bad link:[/red]")
        broken = Table()
        broken.add_column("stream", no_wrap=True)
        broken.add_column("seq", justify="right")
        broken.add_column("problem")
        for link in report.broken[:20]:
            broken.add_row(link.stream, str(link.seq), link.problem or "")
        console.print(broken)
    for problem in report.log.problems[:20]:
        console.print(f"[red]log:[/red] {problem}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Path = typer.Option(None, "--out", dir_okay=False, help="Also write the latest checkpoint to this file."),
) -> None:
    """Sequence the events committed so far, sign a checkpoint over them, and print the latest."""
    from app.audit import checkpoints
    from app.db import session_scope

    ensure_schema(get_settings())
    try:
        made = checkpoints.run()
    except checkpoints.LogInconsistent as exc:
        raise fail(f"{exc}; run `obliviate audit verify`.") from None
    with session_scope() as session:
        latest = checkpoints.latest(session)
        note = latest.note if latest else None
    if note is None:
        raise fail("the audit log is empty: nothing to checkpoint.")
    err_console.print(f"{len(made)} new checkpoint(s).")
    if out is not None:
        out.write_text(note, encoding="utf-8")
    console.print(note, end="", markup=False, highlight=False, soft_wrap=True)


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
    if not result.valid:
        console.print(f"[red]{stream}: broken at seq {result.broken_at_seq}: {result.problem}[/red]", soft_wrap=True)
        return 1
    if expected_head is not None:
        # A held head names a link the chain had then; the chain may have grown since (a
        # certificate names the link before its own certificate.issued event).
        wanted = expected_head.strip().lower()
        at = next((event["seq"] for event in events if event.get("hash") == wanted), None)
        if at is None:
            console.print(f"[red]{stream}: the events verify but do not contain the given head "
                          "(events were cut off or rewritten)[/red]", soft_wrap=True)
            return 1
        console.print(f"[green]{stream}: {result.length} events verify; the given head is seq {at}, "
                      f"{result.length - at} event(s) after it; head {result.head}[/green]", soft_wrap=True)
        return 0
    console.print(f"[green]{stream}: {result.length} events verify; head {result.head}[/green]", soft_wrap=True)
    return 0
