"""Celery tasks. Each takes a row id and returns quietly if the row is gone or already done."""

from __future__ import annotations

from workers.celery_app import celery_app


@celery_app.task(name="workers.tasks.sweep")
def sweep() -> int:
    """Re-enqueue jobs whose lease expired (their worker died); see workers/jobs.py."""
    from workers import jobs

    return jobs.sweep_expired()
