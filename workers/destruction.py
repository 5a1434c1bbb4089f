"""Deleting the bytes of destroyed artifacts, after the destruction committed.

What is destroyed, and which bytes nothing live references any more, is decided in the
destruction's own transaction (`app.unlearning.service.destroy_superseded`); an artifact still
referenced by a live version (a SISA shard the erasure did not touch, the same imported weights
or an identical manifest of another client) is kept, and the erasure that destroys its last live
reference removes it. Here each recorded deletion is carried out in a transaction of its own,
the hash's liveness checked again under its lock."""

from __future__ import annotations

from collections.abc import Iterable

from app.artifacts import service as artifact_service
from app.artifacts.store import get_store
from app.db import session_scope
from app.unlearning import service as unlearning_service
from workers.jobs import TransientError


def purge(shas: Iterable[str] | None = None, *, limit: int = 500) -> int:
    """Carry out pending deletions, one artifact per transaction: the given hashes, or (the
    beat sweeper) the oldest ones left by a worker that stopped between a destruction's commit
    and its deletions. Answers how many artifacts had bytes removed."""
    store = get_store()
    if shas is None:
        with session_scope() as session:
            shas = artifact_service.due(session, limit=limit)
    removed = 0
    for sha in shas:
        with session_scope() as session:
            removed += unlearning_service.finish_deletion(session, sha, store=store)
    return removed


def purge_committed(shas: Iterable[str]) -> None:
    """A job step's deletions, after the destruction committed (a rollback there must never have
    cost live bytes). A store that fails is a transient error: the deletions are recorded, so a
    retry (or the sweeper) finishes them."""
    try:
        purge(shas)
    except Exception as exc:
        raise TransientError("the artifact store did not delete the destroyed artifacts") from exc
