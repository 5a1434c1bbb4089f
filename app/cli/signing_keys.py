"""`obliviate signing-key rotate|revoke|list|export`: the certificate signing keys' lifecycle.
Each rotation and revocation is an event in the `signing-keys` audit chain."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import EXIT_USAGE, console, err_console, fail
from app.cli.keys import _run  # one committed transaction, a domain error as one line

signing_key_app = typer.Typer(no_args_is_help=True, help="Certificate signing keys: rotate, revoke, list, export.")
# Who acted, in the signing keys' audit chain: an operator at the command line.
ACTOR = "cli"


@signing_key_app.command("rotate")
def signing_key_rotate() -> None:
    """Make a new key sign certificates from now on; earlier certificates keep verifying against
    the key that signed them. Every API and worker process must be able to read the new key file."""
    from app.certificates import keys
    from app.db import utcnow

    key = _run(lambda session: keys.rotate(session, utcnow(), ACTOR))
    console.print(f"Certificates are now signed by key [bold]{key.key_id}[/bold] (valid from "
                  f"{key.as_json()['valid_from']}).", soft_wrap=True)
    console.print(f"  public key: {key.public_key}", soft_wrap=True, markup=False)
    err_console.print("Give auditors the new key file: `obliviate signing-key export`.")


@signing_key_app.command("revoke")
def signing_key_revoke(
    key_id: str = typer.Argument(..., help="The key id, as `obliviate signing-key list` shows it."),
    revoked_from: str = typer.Option(..., "--from", help="ISO 8601 time with zone (e.g. 2026-12-01T00:00:00Z): "
                                                         "certificates it signed from then on are invalid."),
    reason: str = typer.Option("compromised", "--reason", help="Why; published with the key (no personal data)."),
) -> None:
    """Mark a retired key compromised from a time; rotate first if it still signs."""
    from app.certificates import keys

    try:
        when = keys.parse_time(revoked_from)
    except ValueError as exc:
        raise fail(f"--from: {exc}", EXIT_USAGE) from None
    assert isinstance(when, datetime)
    key = _run(lambda session: keys.revoke(session, key_id, when, reason, ACTOR))
    console.print(f"Key {key.key_id} is revoked from {key.as_json()['revoked_from']}: certificates it signed from "
                  "then on verify as INVALID, earlier ones stay valid with a note.", soft_wrap=True)


def _ring_document() -> dict:
    from app.certificates import keys

    return _run(lambda session: keys.ring_document(keys.ring(session, create_service_key=True)))


@signing_key_app.command("list")
def signing_key_list() -> None:
    """Every certificate signing key with its validity."""
    table = Table("key id", "status", "valid from", "valid until", "revoked from")
    for key in _ring_document()["keys"]:
        table.add_row(key["key_id"], key["status"], key["valid_from"] or "(first)", key["valid_until"] or "",
                      key["revoked_from"] or "")
    console.print(table)


@signing_key_app.command("export")
def signing_key_export(
    output: Path = typer.Option(None, "--output", "-o", dir_okay=False,
                                help="Write the key file here instead of standard output."),
) -> None:
    """The public key file an auditor keeps: every key with its validity, the same document as
    GET /v1/certificates/keys. `obliviate certificate verify --public-key FILE` reads it."""
    text = json.dumps(_ring_document(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        err_console.print(f"Wrote {output}.", soft_wrap=True, markup=False)
