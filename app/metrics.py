"""Prometheus metrics: this process's counters and histograms, and the rendering of a scrape.
Counts by status and the overdue gauge are read from the database at scrape time, so every API
process reports the same truth (app/health/figures.py reads them; the tables' packages import
the counters here, so this module imports none of them)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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


class _Snapshot:
    """A collector of metric families read beforehand."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)

    def describe(self):
        return []


def render(database: list) -> bytes:
    """This process's counters and histograms, then the database's figures (app/health/figures.py).
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
