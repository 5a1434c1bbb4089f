"""Unlearning jobs of one dataset never run side by side, and a batch that already ran takes no
new requests. Both were found by the chaos run (bench/chaos.py): two jobs of one model starting
from the same dataset version let the later one bring back what the earlier one erased, and a
request joining a job in its retry backoff was skipped by the steps that job had finished."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.objects import approve, create_dataset, import_model


@pytest.fixture
def sent(monkeypatch, database_url):
    from app.jobs import service as job_service

    calls: list = []
    monkeypatch.setattr(job_service, "send", calls.append)  # no broker: record what would be sent
    return calls


@pytest.fixture
def model(client, make_key, settings_env):
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0")
    admin = make_key("admin", client="acme")
    dataset = create_dataset(client, admin)
    imported = import_model(client, admin, dataset["id"])
    return {"headers": admin, "model_id": imported["id"], "dataset_id": dataset["dataset_id"]}


def _job(model_id=None, dataset_id=None):
    from app.db import session_scope
    from app.jobs import service as job_service

    payload = {} if model_id else {"dataset_id": str(dataset_id)}
    with session_scope() as session:
        return job_service.create(session, client="acme", kind="unlearning", model_id=model_id, payload=payload).id


def _claim(job_id) -> int | None:
    from app.db import session_scope
    from app.jobs import service as job_service

    with session_scope() as session:
        return job_service.claim(session, job_id, 60)


def test_second_job_of_a_dataset_waits_without_spending_an_attempt(model, sent):
    import uuid

    from app.db import session_scope
    from app.jobs import service as job_service
    from app.jobs.models import Job
    from app.unlearning import exclusive
    from workers import jobs

    model_id, dataset_id = uuid.UUID(model["model_id"]), uuid.UUID(model["dataset_id"])
    first, second, dataset_only = _job(model_id), _job(model_id), _job(dataset_id=dataset_id)
    assert _claim(first) == 1
    # A worker receiving either message while `first` runs leaves the job queued, attempt 0.
    assert jobs.execute(str(second)) == "deferred"
    assert jobs.execute(str(dataset_only)) == "deferred"
    with session_scope() as session:
        for job_id in (second, dataset_only):
            job = session.get(Job, job_id)
            assert (job.status, job.attempt, job.enqueued_at) == ("queued", 0, None)
    # Not sent again at once, but by the sweeper's next pass (its stranded-job query).
    with session_scope() as session:
        assert {j.id for j in job_service.stranded(session, resend_after_seconds=3600)} >= {second, dataset_only}
    with session_scope() as session:
        job_service.complete(session, first, 1, {})
    with session_scope() as session:
        assert not exclusive.blocked(session, second)
    assert _claim(second) == 1
    with session_scope() as session:
        assert exclusive.blocked(session, dataset_only)  # now `second` holds the dataset


def test_a_job_waiting_out_a_backoff_takes_no_new_requests(client, model, sent):
    from app.db import session_scope, utcnow
    from app.jobs.models import Job
    from app.unlearning import planner
    from app.jobs.models import JobRequest
    from tests.dataset_files import subject_id

    headers = model["headers"]

    def approved(raw: str) -> str:
        body = {"subject": {"identifiers": {"user_id": raw}}, "jurisdiction": "gdpr", "source": "admin"}
        request_id = client.post("/v1/erasure-requests", json=body, headers=headers).json()["id"]
        assert approve(client, headers, request_id).status_code == 200
        return request_id

    approved(subject_id(5))
    with session_scope() as session:
        assert planner.plan_approved(session) == 1
        (ran,) = session.query(Job).filter_by(kind="unlearning").all()
        # It ran once and gave the job back after a transient error: queued, in its backoff.
        ran.attempt, ran.not_before = 1, utcnow() + timedelta(minutes=5)
        ran_id = ran.id
    approved(subject_id(6))
    with session_scope() as session:
        assert planner.plan_approved(session) == 1
        links = {(link.job_id == ran_id) for link in session.query(JobRequest).all()}
        jobs = session.query(Job).filter_by(kind="unlearning").count()
    assert links == {True, False} and jobs == 2
