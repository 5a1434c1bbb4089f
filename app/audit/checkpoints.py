"""The checkpointer: gives committed events their place in the one log over all events and signs
a checkpoint (a C2SP signed note over the RFC 6962 tree head) with the certificate key.

Positions are assigned after commit, by whoever runs this (beat every
`checkpoint_interval_seconds`, and right after a transaction that issued certificates), so the
writers of events never wait for the log. Each checkpoint is stored in `audit_checkpoints` and
then written outside the database (`checkpoint_dir`), where an auditor can also fetch it.
"""

from __future__ import annotations

import logging
import uuid

import fsspec.core
from sqlalchemy import func, literal, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import signing
from app.audit.merkle import Frontier
from app.audit.models import AuditCheckpoint, AuditEvent
from app.audit.notes import Checkpoint, open_checkpoint, sign_checkpoint
from app.config import get_settings
from app.db import is_postgres, on_commit, session_scope, utcnow

log = logging.getLogger("obliviate.audit")

# One checkpointer at a time on PostgreSQL (SQLite serialises writers anyway).
_ADVISORY_LOCK = 0x0B1_1A7E_A0D1
BATCH = 50_000


class LogInconsistent(RuntimeError):
    """The stored log does not extend the latest checkpoint: the checkpointer refuses to sign."""


def origin() -> str:
    configured = get_settings().checkpoint_origin
    return configured or f"obliviate/audit/{signing.key_id(signing.public_key_b64())}"


def public_key() -> bytes:
    return signing.private_key().public_key().public_bytes_raw()


def latest(session: Session) -> AuditCheckpoint | None:
    return session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)).first()


def sequence_and_sign(session: Session, batch: int = BATCH) -> Checkpoint | None:
    """Number up to `batch` unsequenced events after the log's end, in id order, and sign the new
    tree head; None when there was nothing new. Flushes only: the caller commits."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
    previous = latest(session)
    last = session.scalar(select(func.max(AuditEvent.log_index)))
    size = 0 if last is None else last + 1
    frontier = Frontier(previous.tree_size, [bytes.fromhex(n) for n in previous.frontier]) if previous else Frontier()
    if frontier.size != size or (previous and frontier.root().hex() != previous.root_hash):
        # Events were removed or renumbered, or checkpoints deleted: signing now would bless it.
        raise LogInconsistent(
            f"the log holds {size} sequenced events but the latest checkpoint covers {frontier.size}"
        )
    events = AuditEvent.__table__
    numbered = (
        select(events.c.id, (literal(size) + func.row_number().over(order_by=events.c.id) - 1).label("position"))
        .where(events.c.log_index.is_(None)).order_by(events.c.id).limit(batch).subquery()
    )
    assigned = session.execute(
        update(events).where(events.c.id == numbered.c.id).values(log_index=numbered.c.position)
    ).rowcount
    if not assigned:
        return None
    frontier.extend(session.scalars(
        select(events.c.hash).where(events.c.log_index >= size).order_by(events.c.log_index)
    ))
    checkpoint = sign_checkpoint(origin(), frontier.size, frontier.root(), signing.private_key())
    session.add(AuditCheckpoint(
        tree_size=checkpoint.tree_size, root_hash=checkpoint.root_hex, frontier=[n.hex() for n in frontier.nodes],
        note=checkpoint.text, created_at=utcnow(),
    ))
    session.flush()
    return checkpoint


def run(max_rounds: int = 20) -> list[Checkpoint]:
    """Sequence the committed events, one committed checkpoint per batch (at most `max_rounds`,
    so a flood of intake cannot keep one run going), each published after its commit: a note for
    a tree that rolled back must never leave the database."""
    made: list[Checkpoint] = []
    for _ in range(max_rounds):
        with session_scope() as session:
            checkpoint = sequence_and_sign(session)
        if checkpoint is None:
            break
        made.append(checkpoint)
        publish(checkpoint)
    return made


def run_quietly() -> int:
    """`run` for callers that must not fail because of it (beat, after a certificate's commit);
    whatever it could not do, the next run does."""
    try:
        return len(run())
    except LogInconsistent:
        log.error("audit log inconsistent with its latest checkpoint; no checkpoint signed", exc_info=True)
    except DBAPIError:
        log.warning("checkpointer could not run now; the next run catches up", exc_info=True)
    return 0


def anchor_after_commit(session: Session) -> None:
    """Checkpoint right after this transaction commits (certificates are anchored so)."""
    if not session.info.get("checkpoint_after_commit"):
        session.info["checkpoint_after_commit"] = True
        on_commit(session, run_quietly)


# Outside the database.

def _folder() -> tuple[fsspec.AbstractFileSystem, str]:
    settings = get_settings()
    url = settings.checkpoint_dir or f"{settings.artifacts_url.rstrip('/')}/checkpoints"
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/") or "/"


def publish(checkpoint: Checkpoint) -> None:
    """Write `<tree size>` and, unless a larger one is there already (publishers run after their
    commits, in any order), `latest`. A failure is logged; the next checkpoint writes `latest` again."""
    try:
        fs, root = _folder()
        fs.makedirs(root, exist_ok=True)
        _replace(fs, root, str(checkpoint.tree_size), checkpoint.text)
        current = published_latest()
        if current is None or _size_of(current) < checkpoint.tree_size:
            _replace(fs, root, "latest", checkpoint.text)
    except OSError:
        log.error("could not write checkpoint %s outside the database", checkpoint.tree_size, exc_info=True)


def _replace(fs, root: str, name: str, text_: str) -> None:
    staged = f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(staged, text_.encode())
    fs.mv(staged, f"{root}/{name}")


def _size_of(note: str) -> int:
    try:
        return int(note.split("\n")[1])
    except (IndexError, ValueError):
        return -1


def published_latest() -> str | None:
    fs, root = _folder()
    try:
        return fs.cat_file(f"{root}/latest").decode()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        log.warning("the published checkpoint could not be read", exc_info=True)
        return None


def verify_note(note: str, key: bytes | None = None) -> Checkpoint:
    """Open a checkpoint signed by this service's key (or `key`); raises NoteError otherwise."""
    return open_checkpoint(note, key or public_key(), None)
