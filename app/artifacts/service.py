"""Who may delete an artifact's bytes, and when.

Artifacts are content-addressed, so one file can back versions of several clients: the same
imported weights, an identical manifest, an identical dataset file. Bytes may go only when no
live dataset version or model version of any client references their hash. That is decided
under a lock per sha256, in the transaction that marks the versions destroyed, and recorded as a
`PendingDeletion`; the bytes are deleted after that commit (`finish`), so a rollback never loses
bytes something live still uses. Writers that make a row reference stored bytes take the same
lock and cancel a pending deletion (`hold`, `adopt`), so the sweeper and a new reference are
always ordered. Functions here only flush, except `discard_after_rollback`, which opens its own
unit of work once the caller's has rolled back.

Which rows reference a hash is known to the domains that own them (dataset versions in
`app/datasets/`, model versions in `app/models/`): every decision here takes a `LiveReferences`
query, and `app.unlearning.service.live_references` is the one that asks all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from app.artifacts.models import PendingDeletion
from app.artifacts.store import ArtifactMissing, ArtifactStore, get_store
from app.db import is_postgres, on_rollback, session_scope, utcnow

log = logging.getLogger("obliviate.artifacts")
# First key of the two-key advisory locks, so they never meet other locks of the application.
LOCK_NAMESPACE = 0x0B11A7E
# Hashes per IN list or OR of LIKEs: SQLite's expression depth stays far below its limit.
CHUNK = 200

# (session, sorted hashes) → the hashes a live (not destroyed) row of any client still references.
LiveReferences = Callable[[Session, Sequence[str]], set[str]]


class ArtifactReclaimed(ArtifactMissing):
    """Bytes a writer meant to reference were deleted because nothing used them any more; the
    work that produced them must run again (a job retries)."""


def _chunks(shas: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(shas), CHUNK):
        yield list(shas[start:start + CHUNK])


def _lock(session: Session, shas: Iterable[str]) -> list[str]:
    """Lock each hash until the transaction ends, in sorted order so two holders cannot
    deadlock. On SQLite, opening the transaction (BEGIN IMMEDIATE) takes the database's write
    lock, which serialises every writer already."""
    ordered = sorted(set(shas))
    if not is_postgres(session):
        session.connection()
        return ordered
    for sha in ordered:
        key = int.from_bytes(bytes.fromhex(sha)[:4], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:namespace, :key)"), {"namespace": LOCK_NAMESPACE, "key": key})
    return ordered


def schedule_unreferenced(session: Session, candidates: Iterable[str], live: LiveReferences) -> list[str]:
    """In the transaction that marks versions destroyed: record a pending deletion for every
    candidate hash that nothing live references any more (`live` answers which are), and
    answer those hashes."""
    ordered = _lock(session, candidates)
    session.flush()
    referenced = live(session, ordered)
    doomed = [sha for sha in ordered if sha not in referenced]
    pending: set[str] = set()
    for chunk in _chunks(doomed):
        pending.update(session.scalars(select(PendingDeletion.sha256).where(PendingDeletion.sha256.in_(chunk))))
    now = utcnow()
    session.add_all(PendingDeletion(sha256=sha, created_at=now) for sha in doomed if sha not in pending)
    session.flush()
    return doomed


def hold(session: Session, shas: Iterable[str]) -> list[str]:
    """Before writing bytes that a row of this transaction will reference: no deletion of them
    can run until the transaction ends, and an earlier pending one is cancelled."""
    ordered = _lock(session, shas)
    for chunk in _chunks(ordered):
        session.execute(delete(PendingDeletion).where(PendingDeletion.sha256.in_(chunk)))
    return ordered


def adopt(session: Session, shas: Iterable[str], *, store: ArtifactStore | None = None) -> None:
    """When a row starts to reference bytes written earlier (outside this transaction): as
    `hold`, then check the bytes are still there, since a sweeper may have removed them before
    the lock was ours."""
    store = store or get_store()
    missing = [sha for sha in hold(session, shas) if not store.exists(sha)]
    if missing:
        raise ArtifactReclaimed(f"{len(missing)} artifacts were reclaimed before they could be referenced (first {missing[0]})")


def finish(session: Session, sha: str, live: LiveReferences, *, store: ArtifactStore | None = None) -> bool:
    """Carry out one pending deletion: under the hash's lock, delete the bytes if nothing live
    references them, then the record; True when bytes were removed. Commit right after: should
    the commit fail, the record stays and a later run finds nothing left to delete."""
    store = store or get_store()
    _lock(session, [sha])
    row = session.get(PendingDeletion, sha)
    if row is None:
        return False  # finished by another sweeper, or used again
    removed = sha not in live(session, [sha]) and store.delete(sha)
    session.delete(row)
    session.flush()
    return removed


def due(session: Session, *, limit: int = 500) -> list[str]:
    """The oldest pending deletions, for the sweeper."""
    return list(session.scalars(
        select(PendingDeletion.sha256).order_by(PendingDeletion.created_at, PendingDeletion.sha256).limit(limit)))


def discard_after_rollback(session: Session, shas: Iterable[str], live: LiveReferences) -> None:
    """Bytes stored for rows that then failed: once the transaction has rolled back, schedule
    them like destroyed ones (another writer may have started to use the same content meanwhile,
    and the sweeper's `finish` checks every table's references before it deletes anything)."""
    ordered = sorted(set(shas))

    def schedule() -> None:
        try:
            with session_scope() as fresh:
                schedule_unreferenced(fresh, ordered, live)
        except Exception:  # the bytes stay; an orphan is wasted space, not lost data
            log.exception("could not schedule %d orphaned artifacts for deletion", len(ordered))

    on_rollback(session, schedule)
