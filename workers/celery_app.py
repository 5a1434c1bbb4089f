"""The Celery application. Messages only say "look at row N" (DESIGN §3): tasks take ids, the
database row is the job, and a lost or repeated message can neither lose nor double work."""

from __future__ import annotations

from celery import Celery

from app.config import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    celery = Celery("obliviate", broker=settings.broker_url, include=["workers.tasks"])
    celery.conf.update(
        task_ignore_result=True,
        # A task is acknowledged only after it ran, and re-queued if its worker dies mid-run.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_routes={"workers.tasks.run_training_job": {"queue": "unlearning"}, "workers.tasks.run_unlearning_job": {"queue": "unlearning"}},
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        beat_schedule={
            "sweep-expired-leases": {"task": "workers.tasks.sweep", "schedule": settings.sweep_interval_seconds},
        },
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return celery


celery_app = make_celery()
