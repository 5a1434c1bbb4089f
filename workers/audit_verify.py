"""The `audit_verify` job: the dashboard's verification of the whole audit log, run by a worker
under the job's lease (app/dashboard/verification.py holds the rows and the verdict)."""

from __future__ import annotations

from app.dashboard import verification
from workers.jobs import JobContext


def run(context: JobContext) -> None:
    verification.verify(context.job_id, context.attempt, context.progress)
