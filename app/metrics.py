"""Prometheus metrics. Counts by status and the overdue gauge are read from the database at
scrape time, so every API process reports the same truth."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS_CREATED = Counter(
    "obliviate_erasure_requests_created", "Erasure requests created by this process",
    ["source", "jurisdiction"], registry=REGISTRY,
)
INTAKE_LATENCY = Histogram(
    "obliviate_intake_latency_seconds", "Time to accept an erasure request (POST)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
JOBS_FAILED = Counter("obliviate_jobs_failed", "Jobs that exhausted their retries", ["kind"], registry=REGISTRY)
WEBHOOK_ATTEMPTS = Counter("obliviate_webhook_attempts", "Webhook deliveries", ["outcome"], registry=REGISTRY)


# A scrape waits this long for the database's figures, then answers without them.
DATABASE_WAIT_SECONDS = 5.0


def _database_families() -> list:
    """Requests by status, overdue requests and jobs by kind and status, read in a transaction
    that only reads (on SQLite it takes no write lock). Empty when the database is down: a
    scrape must not fail because of it; readyz says so."""
    from app.db import read_session, utcnow
    from app.jobs.models import Job
    from app.requests.lifecycle import TERMINAL
    from app.requests.models import ErasureRequest

    by_status = GaugeMetricFamily("obliviate_erasure_requests", "Erasure requests by status", labels=["status"])
    overdue = GaugeMetricFamily("obliviate_erasure_requests_overdue", "Open requests past their due date")
    jobs = GaugeMetricFamily("obliviate_jobs", "Training and unlearning jobs by kind and status", labels=["kind", "status"])
    try:
        with read_session() as session:
            rows = session.execute(select(ErasureRequest.status, func.count()).group_by(ErasureRequest.status)).all()
            late = session.scalar(
                select(func.count()).select_from(ErasureRequest).where(
                    ErasureRequest.due_at < utcnow(), ErasureRequest.status.not_in(TERMINAL)
                )
            )
            job_rows = session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all()
            session.rollback()
    except Exception:
        return []
    for status, count in rows:
        by_status.add_metric([status], count)
    overdue.add_metric([], late or 0)
    for kind, status, count in job_rows:
        jobs.add_metric([kind, status], count)
    return [by_status, overdue, jobs]


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


class _Snapshot:
    """A collector of metric families read beforehand."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)

    def describe(self):
        return []


def render(database: list) -> bytes:
    """This process's counters and histograms, then the database's figures (`database_families`).
    With PROMETHEUS_MULTIPROC_DIR set (several API processes), counters and histograms are summed
    over every process through prometheus-client's multiprocess mode."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(database))
    return generate_latest(registry) + generate_latest(snapshot)
