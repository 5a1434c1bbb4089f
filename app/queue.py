"""The one way the API sends work to the workers: Celery tasks by name.

The API never imports `workers` (nor torch through it): it builds a Celery app of its own with the
same configuration the workers use, and sends by the names the workers register (workers/tasks.py).
Job messages only say "look at row N" (docs/architecture.md, "The row is the job"). A prediction changes no state, so its message
carries its inputs and its answer comes back through the result backend.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from app.config import get_settings

RUN_JOB = "workers.tasks.run_job"
PREDICT = "workers.tasks.predict"
GENERATE = "workers.tasks.generate"
SCORE = "workers.tasks.score"
# An image model's samples and per-image denoising losses.
SAMPLE = "workers.tasks.sample"
SCORE_IMAGES = "workers.tasks.score_images"
INFERENCE_QUEUE = "inference"
ROUTES = {RUN_JOB: {"queue": "unlearning"}} | {
    task: {"queue": INFERENCE_QUEUE} for task in (PREDICT, GENERATE, SCORE, SAMPLE, SCORE_IMAGES)
}
# A result the API did not collect (it timed out) is dropped by the backend after this.
RESULT_EXPIRES_SECONDS = 3600


class InferenceTimeout(Exception):
    """No inference worker answered within the timeout."""


def _transport_options(broker_url: str) -> dict:
    # kombu's SQLAlchemy transport hands every transport option to create_engine(), so Redis-only
    # options such as visibility_timeout would crash it. SQLite needs a busy timeout instead:
    # the API, the worker and beat all write the same broker file.
    if broker_url.startswith("sqla+"):
        return {"connect_args": {"timeout": 30}} if broker_url.startswith("sqla+sqlite") else {}
    return {"visibility_timeout": 3600}


def _tolerate_concurrent_queue_creation() -> None:
    """kombu's SQLAlchemy transport creates a queue's row on first use under a lock that only
    orders the threads of one process. When the API and a worker that just started both use a
    new queue (`inference`, say) first, one of them inserts a row the other inserted a moment
    before: its commit raises IntegrityError, which kombu does not catch (only OperationalError),
    so the call failed and the channel's session stayed unusable until rolled back. Here that
    commit rolls back and reads the row the other process made. Installed once, for the
    embedded broker only; Redis brokers never touch it."""
    from kombu.transport import sqlalchemy as transport
    from sqlalchemy.exc import IntegrityError

    channel = transport.Channel
    if getattr(channel, "_obliviate_tolerant", False):
        return
    create = channel._get_or_create

    def get_or_create(self, queue):
        try:
            return create(self, queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    channel._get_or_create = get_or_create
    channel._obliviate_tolerant = True


def make_celery(include: tuple[str, ...] = ()) -> Celery:
    """A Celery app on the configured broker and result backend; the workers add their tasks."""
    settings = get_settings()
    if settings.broker_url.startswith("sqla+"):
        _tolerate_concurrent_queue_creation()
    celery = Celery("obliviate", broker=settings.broker_url, backend=settings.result_backend_url, include=list(include))
    celery.conf.update(
        # Only tasks that answer (predictions) store a result; they say so themselves.
        task_ignore_result=True,
        result_expires=RESULT_EXPIRES_SECONDS,
        # JSON both ways: a message or a stored result can never run code when it is read.
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        # A task is acknowledged only after it ran, and re-queued if its worker dies mid-run.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_routes=ROUTES,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.broker_url),
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return celery


_apps: dict[tuple[str, str], Celery] = {}
_lock = threading.Lock()


def get_app() -> Celery:
    settings = get_settings()
    key = (settings.broker_url, settings.result_backend_url)
    with _lock:
        if key not in _apps:
            _apps[key] = make_celery()
        return _apps[key]


def send_job(job_id: Any) -> None:
    """Wake a worker for job row `job_id` (the row is the job; the message is only a nudge)."""
    get_app().send_task(RUN_JOB, args=[str(job_id)])


def call(name: str, kwargs: dict[str, Any], timeout: float) -> Any:
    """Send task `name` and wait up to `timeout` seconds for its answer. Blocking: run it in a
    thread of its own, never on the event loop nor while holding a database session.

    Sending and waiting happen on one thread: Celery keeps one result backend per thread."""
    result = get_app().send_task(name, kwargs=kwargs, expires=timeout)
    try:
        return result.get(timeout=timeout, interval=0.05)
    except CeleryTimeout:
        raise InferenceTimeout from None
    finally:
        # The inputs' answer is not kept past this call.
        result.forget()
