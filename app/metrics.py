"""Prometheus metrics. Counts by status and the overdue gauge are read from the database at
scrape time, so every API process reports the same truth."""

from __future__ import annotations

import os

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


class _DatabaseCollector:
    def collect(self):
        from app.db import get_sessionmaker, utcnow
        from app.jobs.models import Job
        from app.requests.lifecycle import TERMINAL
        from app.requests.models import ErasureRequest

        by_status = GaugeMetricFamily("obliviate_erasure_requests", "Erasure requests by status", labels=["status"])
        overdue = GaugeMetricFamily("obliviate_erasure_requests_overdue", "Open requests past their due date")
        jobs = GaugeMetricFamily("obliviate_jobs", "Training and unlearning jobs by kind and status", labels=["kind", "status"])
        try:
            with get_sessionmaker()() as session:
                rows = session.execute(select(ErasureRequest.status, func.count()).group_by(ErasureRequest.status)).all()
                late = session.scalar(
                    select(func.count()).select_from(ErasureRequest).where(
                        ErasureRequest.due_at < utcnow(), ErasureRequest.status.not_in(TERMINAL)
                    )
                )
                job_rows = session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all()
                session.rollback()
        except Exception:  # a scrape must not fail because the database is down; readyz says so
            return
        for status, count in rows:
            by_status.add_metric([status], count)
        overdue.add_metric([], late or 0)
        for kind, status, count in job_rows:
            jobs.add_metric([kind, status], count)
        yield by_status
        yield overdue
        yield jobs

    def describe(self):
        return []


_DB_COLLECTOR = _DatabaseCollector()
REGISTRY.register(_DB_COLLECTOR)


def render() -> bytes:
    """With PROMETHEUS_MULTIPROC_DIR set (several API processes), counters and histograms are
    summed over every process through prometheus-client's multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_DB_COLLECTOR)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
