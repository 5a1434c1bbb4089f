"""The database's figures for a /metrics scrape: requests by status, overdue requests, jobs by
kind and status, exact erasures whose sanity check failed (app/metrics.py renders them after this
process's counters)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from app.db import read_session, utcnow
from app.jobs.models import Job
from app.requests.lifecycle import TERMINAL
from app.requests.models import ErasureRequest

# The exact methods of app/unlearning/types.py (`EXACT_METHODS`; app.unlearning imports this
# package, so it is named here; tests/dashboard/test_pages.py checks they agree).
EXACT_METHODS = ("retrain", "sisa")
# A scrape waits this long for the database's figures, then answers without them.
DATABASE_WAIT_SECONDS = 5.0


def _database_families() -> list:
    """Requests by status, overdue requests and jobs by kind and status, read in a transaction
    that only reads (on SQLite it takes no write lock). Empty when the database is down: a
    scrape must not fail because of it; readyz says so."""
    by_status = GaugeMetricFamily("obliviate_erasure_requests", "Erasure requests by status", labels=["status"])
    overdue = GaugeMetricFamily("obliviate_erasure_requests_overdue", "Open requests past their due date")
    jobs = GaugeMetricFamily("obliviate_jobs", "Training and unlearning jobs by kind and status", labels=["kind", "status"])
    # The operator alarm of app/unlearning/sanity.py, read from the jobs' results so that every
    # API process reports it, whichever worker ran the job.
    sanity = GaugeMetricFamily(
        "obliviate_exact_sanity_check_failures",
        "Exact erasures (retrain, SISA) whose sanity check failed: the lineage or the checks' calibration is wrong",
        labels=["method"])
    entry = Job.result["model"]
    method = entry["method"].as_string()
    try:
        with read_session() as session:
            rows = session.execute(select(ErasureRequest.status, func.count()).group_by(ErasureRequest.status)).all()
            late = session.scalar(
                select(func.count()).select_from(ErasureRequest).where(
                    ErasureRequest.due_at < utcnow(), ErasureRequest.status.not_in(TERMINAL)
                )
            )
            job_rows = session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all()
            failed = dict(session.execute(
                select(method, func.count()).where(
                    Job.kind == "unlearning", method.in_(sorted(EXACT_METHODS)),
                    entry["verification"]["verdicts"]["verdict"].as_string() == "fail",
                ).group_by(method)).all())
            session.rollback()
    except Exception:
        return []
    for status, count in rows:
        by_status.add_metric([status], count)
    overdue.add_metric([], late or 0)
    for kind, status, count in job_rows:
        jobs.add_metric([kind, status], count)
    for name in sorted(EXACT_METHODS):
        sanity.add_metric([name], failed.get(name, 0))
    return [by_status, overdue, jobs, sanity]


_reading_lock = threading.Lock()
_reading: Future | None = None


def _read_in_own_thread() -> Future:
    """The database is read on a thread of its own, never the API's threadpool, so that a
    scrape answers while that pool is busy. Concurrent scrapes share one read."""
    global _reading
    with _reading_lock:
        if _reading is None or _reading.done():
            future: Future = Future()
            threading.Thread(target=lambda: future.set_result(_database_families()), name="metrics-database", daemon=True).start()
            _reading = future
        return _reading


async def database_families(timeout: float = DATABASE_WAIT_SECONDS) -> list:
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_read_in_own_thread())), timeout)
    except TimeoutError:
        return []
