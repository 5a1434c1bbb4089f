"""The Celery application. Messages only say "look at row N" (DESIGN §3): tasks take ids, the
database row is the job, and a lost or repeated message can neither lose nor double work."""

from __future__ import annotations

from celery import Celery

from app.config import get_settings


def _transport_options(broker_url: str) -> dict:
    # kombu's SQLAlchemy transport hands every transport option to create_engine(), so Redis-only
    # options such as visibility_timeout would crash it. SQLite needs a busy timeout instead:
    # the API, the worker and beat all write the same broker file.
    if broker_url.startswith("sqla+"):
        return {"connect_args": {"timeout": 30}} if broker_url.startswith("sqla+sqlite") else {}
    return {"visibility_timeout": 3600}


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
        task_routes={"workers.tasks.run_job": {"queue": "unlearning"}},
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.broker_url),
        beat_schedule={
            "sweep-expired-leases": {"task": "workers.tasks.sweep", "schedule": settings.sweep_interval_seconds},
            "purge-artifacts": {"task": "workers.tasks.purge_artifacts", "schedule": settings.sweep_interval_seconds},
            "plan-approved-requests": {"task": "workers.tasks.plan", "schedule": settings.plan_interval_seconds},
            "deliver-webhooks": {"task": "workers.tasks.deliver_webhooks", "schedule": settings.plan_interval_seconds},
            "checkpoint-audit-log": {"task": "workers.tasks.checkpoint", "schedule": settings.checkpoint_interval_seconds},
        },
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return celery


celery_app = make_celery()
