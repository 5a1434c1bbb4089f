"""`obliviate keys create|list|revoke|rotate`: the API keys' lifecycle, audited like the API's."""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from app.cli.common import EXIT_USAGE, console, ensure_schema, err_console, fail
from app.config import get_settings

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, revoke, rotate.")
# Who acted, in the keys' audit chains: an operator at the command line.
ACTOR = "cli"


def _expiry(days: float | None):
    from app.db import utcnow

    if days is None:
        return None
    if days <= 0:
        raise fail("--expires-in-days must be positive.", EXIT_USAGE)
    return utcnow() + timedelta(days=days)


def _show_created(key, plaintext: str) -> None:
    console.print(f"Created API key [bold]{key.name}[/bold]", soft_wrap=True)
    console.print(f"  id:      {key.id}", soft_wrap=True)
    console.print(f"  client:  {key.client}", soft_wrap=True)
    console.print(f"  scopes:  {', '.join(key.scopes.split())}", soft_wrap=True)
    console.print(f"  expires: {key.expires_at.isoformat() if key.expires_at else 'never'}", soft_wrap=True)
    console.print(f"  key:     {plaintext}", soft_wrap=True, markup=False)
    err_console.print("Store the key now: only its hash is kept and it cannot be shown again.")


def _run(work):
    """Run `work(session)` in one committed transaction; a domain error is one line, exit 1."""
    from app.db import session_scope
    from app.errors import ProblemError

    ensure_schema(get_settings())
    try:
        with session_scope() as session:
            return work(session)
    except ProblemError as exc:
        raise fail(exc.detail) from None


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="A label for the key, e.g. the system that will use it."),
    scopes: str = typer.Option(..., "--scopes", help="Comma-separated: requests:write, requests:read, requests:review, models:write, models:read, audit:read, admin."),
    client: str = typer.Option(None, "--client", help="The client (tenant) the key acts for; defaults to NAME."),
    expires_in_days: float = typer.Option(None, "--expires-in-days", help="The key stops working after this many days."),
    owner: str = typer.Option(None, "--owner", help="The person who holds the key (a name), shown wherever the key acted."),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from app.keys.service import InvalidScopes, create_key, parse_scopes

    try:
        scope_list = parse_scopes(scopes)
    except InvalidScopes as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    expires_at = _expiry(expires_in_days)
    key, plaintext = _run(
        lambda session: create_key(session, name, scope_list, client=client, expires_at=expires_at, actor=ACTOR,
                                   owner=(owner or "").strip()[:100] or None)
    )
    _show_created(key, plaintext)


@keys_app.command("list")
def keys_list(
    client: str = typer.Option(None, "--client", help="Only this client's keys."),
    state: str = typer.Option(None, "--state", help="active, revoked or expired; all by default."),
    limit: int = typer.Option(200, "--limit", min=1, max=10_000, help="At most this many, newest first."),
) -> None:
    """List keys (never their secrets): id, client, name, prefix, scopes, state and dates."""
    from app.keys.service import STATES, list_keys, state_of

    if state is not None and state not in STATES:
        raise fail(f"--state is one of {', '.join(STATES)}.", EXIT_USAGE)
    table = Table()
    for column in ("id", "client", "name", "prefix", "scopes", "state", "created", "expires"):
        table.add_column(column, no_wrap=column == "id", overflow="fold")

    def fill(session):
        rows, _cursor = list_keys(session, client=client, state=state, limit=limit)
        for key in rows:
            table.add_row(
                str(key.id), key.client, key.name, key.prefix, " ".join(key.scopes.split()), state_of(key),
                f"{key.created_at:%Y-%m-%d %H:%M}", f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "never",
            )
        return len(rows)

    shown = _run(fill)
    console.print(table)
    err_console.print(f"{shown} key(s).")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key's id (from `obliviate keys list`)."),
    reason: str = typer.Option(None, "--reason", help="Recorded in the key's audit chain."),
) -> None:
    """Revoke a key now; every API process refuses it within OBLIVIATE_PRINCIPAL_CACHE_SECONDS."""
    from app.keys.service import revoke_key

    key = _run(lambda session: revoke_key(session, key_id, actor=ACTOR, reason=reason))
    console.print(
        f"Revoked API key {key.id} ({key.name}, client {key.client}) at {key.revoked_at.isoformat()}.",
        soft_wrap=True, markup=False,
    )


@keys_app.command("rotate")
def keys_rotate(
    key_id: str = typer.Argument(..., help="The key's id (from `obliviate keys list`)."),
    grace_seconds: int = typer.Option(
        0, "--grace-seconds", min=0, help="The old key keeps working this long beside the new one; 0 revokes it now.",
    ),
    expires_in_days: float = typer.Option(None, "--expires-in-days", help="The new key stops working after this many days."),
) -> None:
    """Replace a key by a new one with the same client, name and scopes, and end the old one."""
    from app.keys.service import rotate_key

    expires_at = _expiry(expires_in_days)
    new, plaintext, old = _run(lambda session: rotate_key(
        session, key_id, actor=ACTOR, grace_seconds=grace_seconds, expires_at=expires_at,
    ))
    ends = "is revoked" if old.revoked_at else f"stops working at {old.expires_at.isoformat()}"
    err_console.print(f"The old key {old.id} {ends}.", soft_wrap=True)
    _show_created(new, plaintext)
