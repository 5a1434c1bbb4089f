"""Verifying the whole audit log in the background: the page starts a run and polls its row.

The run is a thread of the API process, so a long log never holds the request or a threadpool
slot. On PostgreSQL its progress is written every PROGRESS_EVERY chains in a short transaction
of its own; on SQLite every transaction holds the write lock, so the reading transaction is the
only one until the verdict. A run whose process died stays 'running'; another may be started.
"""

from __future__ import annotations

import logging
import threading
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.audit.models import AuditHead
from app.dashboard.models import AuditVerification
from app.db import is_postgres, on_commit, session_scope, utcnow
from app.keys.service import Principal

log = logging.getLogger("obliviate.dashboard")
PROGRESS_EVERY = 500
MAX_BROKEN_LISTED = 100


def start(session: Session, principal: Principal) -> AuditVerification:
    """A new run's row; its thread starts once the caller's transaction commits."""
    total = session.scalar(select(func.count()).select_from(AuditHead)) or 0
    run = AuditVerification(
        id=uuid.uuid4(), status="running", started_by=principal.actor, chains_total=total, chains_done=0,
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    run_id = run.id
    on_commit(session, lambda: launch(run_id))
    return run


def launch(run_id: uuid.UUID) -> threading.Thread:
    thread = threading.Thread(target=_run, args=(run_id,), name=f"audit-verify-{run_id}", daemon=True)
    thread.start()
    return thread


def _progress(run_id: uuid.UUID, **values) -> None:
    with session_scope() as session:
        run = session.get(AuditVerification, run_id)
        for name, value in values.items():
            setattr(run, name, value)


def _run(run_id: uuid.UUID) -> None:
    chains = events = 0
    broken: list[dict] = []
    try:
        with session_scope() as session:
            report_progress = is_postgres(session)
            for stream, result in audit_service.verify_all(session):
                chains += 1
                events += result.length
                if not result.valid:
                    broken.append({"stream": stream, "seq": result.broken_at_seq, "problem": result.problem})
                if report_progress and chains % PROGRESS_EVERY == 0:
                    _progress(run_id, chains_done=chains)
        _progress(run_id, status="completed", chains_done=chains, finished_at=utcnow(), result={
            "valid": not broken, "chains": chains, "events": events, "broken_count": len(broken),
            "broken": broken[:MAX_BROKEN_LISTED],
        })
    except Exception:
        log.exception("audit verification %s failed", run_id)
        _progress(run_id, status="failed", finished_at=utcnow(), result={"error": "verification stopped on an error; see the server log"})


def get(session: Session, run_id: uuid.UUID) -> AuditVerification | None:
    return session.get(AuditVerification, run_id)


def recent(session: Session, limit: int = 10) -> list[AuditVerification]:
    return list(session.scalars(select(AuditVerification).order_by(AuditVerification.started_at.desc()).limit(limit)))
