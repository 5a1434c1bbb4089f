"""Running one job row: claim, heartbeat, dispatch to its kind, and the sweeper.

Retries live in the database, not in Celery: a transient error puts the row back to `queued`
with a backoff; the sweeper re-sends rows whose message was lost and re-queues rows whose
worker died (expired lease). Duplicate messages are harmless because claiming is conditional.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from app.artifacts.service import ArtifactReclaimed
from app.config import get_settings
from app.db import is_transient, session_scope
from app.jobs import service as job_service
from app.jobs.service import LeaseLost
from app.unlearning import exclusive

log = logging.getLogger("obliviate.jobs")

# kind → "module:function(context)", each module named after its kind; imported lazily so the
# sweeper never loads torch. What a job's failure does to other rows is app/jobs/service.py's ON_FAILED.
HANDLERS = {kind: f"workers.{kind}:run" for kind in ("training", "unlearning", "references", "rehearsal", "audit_verify",
                                                               "remediation")}


class TransientError(RuntimeError):
    """Raised by handlers for failures worth retrying (a store or peer briefly unavailable)."""


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class JobContext:
    """What a handler gets: its job id and attempt, progress reporting, and a heartbeat that keeps
    the lease alive through long steps (and notices when the lease was lost)."""

    def __init__(self, job_id, attempt: int, lease_seconds: float):
        self.job_id = job_id
        self.attempt = attempt
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        # Which process holds the job, for operators (and for fault-injection tests).
        self._holder = {"host": socket.gethostname(), "pid": os.getpid()}
        self._progress: dict[str, Any] = {"fraction": 0.0, "step": "started", "attempt": attempt, **self._holder}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._dirty = True
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> "JobContext":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def progress(self, fraction: float, step: str) -> None:
        fraction = max(0.0, min(1.0, fraction))
        elapsed = time.monotonic() - self._started
        eta = round(elapsed * (1 - fraction) / fraction, 1) if fraction > 0.01 else None
        self._progress = {"fraction": round(fraction, 4), "step": step, "eta_seconds": eta, "attempt": self.attempt, **self._holder}
        self._dirty = True
        self.check()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id} attempt {self.attempt} lost its lease")

    def _renew(self) -> None:
        with session_scope() as session:
            job_service.renew(session, self.job_id, self.attempt, self.lease_seconds, self._progress if self._dirty else None)
        self._dirty = False

    def _beat(self) -> None:
        interval = max(0.5, min(self.lease_seconds / 3, 2.0))
        while not self._stop.wait(interval):
            try:
                self._renew()
            except LeaseLost:
                self.lost.set()
                return
            except Exception:  # a database blip: keep trying until the lease really expires
                log.warning("lease renewal failed for job %s", self.job_id, exc_info=True)


def execute(job_id: str) -> str:
    settings = get_settings()
    try:
        job_id = uuid.UUID(str(job_id))
    except ValueError:
        log.error("ignoring a message with a malformed job id")
        return "skipped"
    with session_scope() as session:
        if exclusive.blocked(session, job_id):
            log.info("job %s waits: another unlearning job of its dataset is running", job_id)
            return "deferred"
        attempt = job_service.claim(session, job_id, settings.job_lease_seconds)
        kind = job_service.kind_of(session, job_id) if attempt is not None else None
    if attempt is None:
        return "skipped"
    log.info("job %s claimed (attempt %s)", job_id, attempt)
    handler = _resolve(HANDLERS[kind])
    try:
        with JobContext(job_id, attempt, settings.job_lease_seconds) as context:
            handler(context)
        return "completed"
    except LeaseLost:
        log.warning("job %s attempt %s lost its lease; its work is discarded", job_id, attempt)
        return "lease-lost"
    except (TransientError, ArtifactReclaimed, ConnectionError, TimeoutError) as exc:
        return _give_back(job_id, attempt, exc)
    except Exception as exc:
        if is_transient(exc):  # the database went away or dropped our connection
            return _give_back(job_id, attempt, exc)
        return _fail(job_id, attempt, exc)


def _give_back(job_id, attempt: int, exc: BaseException) -> str:
    delay = min(300.0, 2.0 ** attempt)
    log.warning("job %s attempt %s hit a transient error (%s); retrying in %.0fs", job_id, attempt, type(exc).__name__, delay)
    try:
        with session_scope() as session:
            given_back = job_service.give_back(
                session, job_id, attempt, f"{type(exc).__name__}: transient, will retry", delay)
        # _fail opens its own unit of work; inside ours it would wait on our SQLite write lock.
        if not given_back:
            return _fail(job_id, attempt, exc)
    except LeaseLost:
        return "lease-lost"
    except Exception:  # database still down: the lease expires and the sweeper takes over
        log.exception("could not give job %s back", job_id)
    return "retry"


def _fail(job_id, attempt: int, exc: BaseException) -> str:
    log.error("job %s attempt %s failed: %s", job_id, attempt, type(exc).__name__, exc_info=exc)
    try:
        with session_scope() as session:
            job_service.fail_for_good(session, job_id, attempt, f"{type(exc).__name__}: {exc}")
    except LeaseLost:
        return "lease-lost"
    return "failed"


def sweep_expired() -> int:
    """Re-queue jobs whose worker died, fail those out of attempts, re-send lost messages."""
    resend_after = max(60.0, 4 * get_settings().sweep_interval_seconds)
    with session_scope() as session:
        return job_service.sweep(session, resend_after_seconds=resend_after)
