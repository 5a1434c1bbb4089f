"""The Celery application of the workers. Messages only say "look at row N" (docs/architecture.md, "The row is the job"): tasks
take ids, the database row is the job, and a lost or repeated message can neither lose nor double
work. Predictions, which change nothing, are the exception: they carry their inputs and answer.
The configuration is the API's (app/queue.py), so both sides agree on broker, backend and routes."""

from __future__ import annotations

from celery import Celery
from kombu.transport import sqlalchemy as sql_transport

from app.config import get_settings
from app.queue import make_celery as make_queue_app

# How often a worker on a database broker (the embedded default) looks for messages while its
# queues are empty. kombu's 1 s would be added to every prediction; a look is one short
# transaction. It cannot go in broker_transport_options: that transport hands them all to
# create_engine(). Redis pushes messages and is not affected.
SQL_BROKER_POLLING_SECONDS = 0.1


def make_celery() -> Celery:
    settings = get_settings()
    sql_transport.Transport.polling_interval = SQL_BROKER_POLLING_SECONDS
    celery = make_queue_app(include=("workers.tasks",))
    celery.conf.beat_schedule = {
        "sweep-expired-leases": {"task": "workers.tasks.sweep", "schedule": settings.sweep_interval_seconds},
        "purge-artifacts": {"task": "workers.tasks.purge_artifacts", "schedule": settings.sweep_interval_seconds},
        "plan-approved-requests": {"task": "workers.tasks.plan", "schedule": settings.plan_interval_seconds},
        "deliver-webhooks": {"task": "workers.tasks.deliver_webhooks", "schedule": settings.plan_interval_seconds},
        "checkpoint-audit-log": {"task": "workers.tasks.checkpoint", "schedule": settings.checkpoint_interval_seconds},
    }
    return celery


celery_app = make_celery()
