"""A dashboard audit verification whose worker dies does not stay 'running' (issue 20, item 15).

Runs were threads of the API process: one whose process died stayed 'running' for good. A run is
now an `audit_verify` job, so a worker that claims it and dies lets its lease expire, and the
sweeper gives it to another worker (the run completes) or, out of attempts, fails it (so does the
run). The dying worker here is the claim it leaves behind: an attempt that never renews its lease.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta

import pytest

from tests.dashboard.helpers import csrf_of, new_key, sign_in
from tests.objects import request_body
from tests.worker import Worker, wait_for

pytestmark = pytest.mark.timeout(300)


def _start_run(client) -> uuid.UUID:
    sign_in(client, new_key("admin", client="ops"))
    assert client.post("/v1/erasure-requests", headers={"Authorization": f"Bearer {new_key(client='ops')}"},
                       json=request_body(identifiers={"email": "verify@example.org"})).status_code == 201
    started = client.post("/admin/audit/verify", data={"csrf_token": csrf_of(client, "/admin/audit")},
                          follow_redirects=False)
    assert started.status_code == 303
    return uuid.UUID(re.fullmatch(r"/admin/audit/([0-9a-f-]+)", started.headers["location"]).group(1))


def _job_of(run_id: uuid.UUID):
    from sqlalchemy import select

    from app.db import session_scope
    from app.jobs.models import Job

    with session_scope() as session:
        jobs = [job for job in session.scalars(select(Job).where(Job.kind == "audit_verify"))
                if job.payload.get("run_id") == str(run_id)]
        assert len(jobs) == 1, "the run is carried out by one job"
        return jobs[0].id


def _claimed_by_a_worker_that_dies(job_id) -> None:
    """What a worker leaves when it is killed right after its claim: a short lease, never renewed."""
    from app.db import session_scope
    from app.jobs import service as job_service

    with session_scope() as session:
        assert job_service.claim(session, job_id, lease_seconds=0.5) == 1
    time.sleep(1.0)  # the lease is over: nothing renews it


def _run_status(run_id: uuid.UUID) -> tuple[str, dict | None]:
    from app.dashboard.models import AuditVerification
    from app.db import session_scope

    with session_scope() as session:
        run = session.get(AuditVerification, run_id)
        return run.status, run.result


def test_a_run_whose_worker_died_is_retried_by_another_worker_and_completes(client, tmp_path):
    run_id = _start_run(client)
    job_id = _job_of(run_id)
    _claimed_by_a_worker_that_dies(job_id)
    assert _run_status(run_id)[0] == "running"

    worker = Worker(tmp_path / "worker.log").start()  # with beat: its sweeper finds the expired lease
    try:
        status, result = wait_for(lambda: (s := _run_status(run_id))[0] != "running" and s, 120,
                                  what="the run to leave 'running'")
    finally:
        worker.stop()
    assert status == "completed", (status, result, worker.log())
    assert result["valid"] is True and result["chains"] >= 1
    page = client.get(f"/admin/audit/{run_id}").text
    assert 'data-status="completed"' in page and "Every chain intact" in page


def test_a_run_whose_workers_died_out_of_attempts_fails(client, settings_env):
    from app.db import session_scope
    from app.jobs.models import Job
    from workers import jobs

    settings_env(JOB_MAX_ATTEMPTS="1")
    run_id = _start_run(client)
    job_id = _job_of(run_id)
    _claimed_by_a_worker_that_dies(job_id)

    jobs.sweep_expired()

    status, result = _run_status(run_id)
    assert status == "failed" and "died" in result["error"], (status, result)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "lease expired" in job.error
        assert job.finished_at is not None and job.finished_at - job.started_at < timedelta(minutes=5)
    assert 'data-status="failed"' in client.get(f"/admin/audit/{run_id}").text
