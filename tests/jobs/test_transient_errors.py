"""Which database errors give a job back for a retry rather than failing it (app.db.is_transient,
used by workers.jobs.execute)."""

from __future__ import annotations

import sys

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.db import is_transient


class _DriverError(Exception):
    pass


def _handler(context) -> None:  # replaced by each test; the job runner resolves it by name
    raise AssertionError("not replaced")


def test_a_lost_or_refused_connection_is_transient_and_a_bad_statement_is_not():
    assert is_transient(OperationalError("SELECT 1", {}, _DriverError("server closed the connection")))
    assert is_transient(DBAPIError("SELECT 1", {}, _DriverError("reset"), connection_invalidated=True))
    assert not is_transient(DBAPIError("SELECT 1", {}, _DriverError("syntax error")))
    assert not is_transient(IntegrityError("INSERT", {}, _DriverError("duplicate key")))
    assert not is_transient(ValueError("not a database error"))


def test_execute_gives_a_job_back_on_a_transient_database_error(database_url, monkeypatch):
    from app.db import session_scope
    from app.jobs import service as job_service
    from app.jobs.models import Job
    from workers import jobs

    monkeypatch.setattr(job_service, "send", lambda job_id: None)
    calls = []

    def flaky(context):
        calls.append(context.attempt)
        raise OperationalError("SELECT 1", {}, _DriverError("server closed the connection"))

    monkeypatch.setitem(jobs.HANDLERS, "probe", "tests.jobs.test_transient_errors:_handler")
    monkeypatch.setattr(sys.modules[__name__], "_handler", flaky)
    with session_scope() as session:
        job_id = job_service.create(session, client="acme", kind="probe", model_id=None, payload={}).id
    assert jobs.execute(str(job_id)) == "retry" and calls == [1]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued" and "OperationalError" in job.error
