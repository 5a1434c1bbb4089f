"""A small dataset keyed by user_id with an e-mail identifier column, and the planner and
worker steps that carry an approved request out in-process."""

from __future__ import annotations

import pyarrow as pa
from sqlalchemy import select

from tests.dataset_files import csv_bytes, parquet_bytes, upload
from tests.objects import approve

SCOPES = "requests:write,requests:read,requests:review,models:write,models:read"
# Jane owns three rows (her e-mail written in two letter cases); twelve others own two each.
JANE_ID, JANE_EMAIL = "u-jane", "Jane.Doe@Example.org"
OTHERS = [(f"u-{i:02d}", f"person{i}@example.org") for i in range(12)]


def people_table() -> pa.Table:
    rows = [(JANE_ID, JANE_EMAIL), (JANE_ID, JANE_EMAIL.lower()), (JANE_ID, JANE_EMAIL)]
    rows += [person for person in OTHERS for _ in range(2)]
    count = len(rows)
    return pa.table({
        "user_id": [user for user, _email in rows], "email": [email for _user, email in rows],
        "digit": [i % 2 for i in range(count)], "f0": [float(i) for i in range(count)],
        "f1": [float(i % 3) for i in range(count)],
    })


def upload_people(client, headers, *, name: str = "people", parquet: bool = False, **fields):
    table = people_table()
    content = parquet_bytes(table) if parquet else csv_bytes(table)
    return upload(client, headers, content, name=name, **{"identifier_columns": '{"email": "email"}', **fields})


def request_by(client, headers, identifiers: dict[str, str]):
    body = {"subject": {"identifiers": identifiers}, "jurisdiction": "gdpr", "source": "portal"}
    return client.post("/v1/erasure-requests", json=body, headers=headers)


def approve_and_plan(client, headers, request_id: str) -> None:
    from app.db import session_scope
    from app.unlearning import planner

    assert approve(client, headers, request_id).status_code == 200
    with session_scope() as session:
        planner.plan_approved(session)


def run_unlearning_jobs() -> list[str]:
    """Open the batch windows of the queued unlearning jobs and run them."""
    from app.db import session_scope, utcnow
    from app.jobs.models import Job
    from workers import jobs

    with session_scope() as session:
        queued = list(session.scalars(select(Job).where(Job.kind == "unlearning", Job.status == "queued")))
        for job in queued:
            job.not_before = utcnow()
        ids = [str(job.id) for job in queued]
    return [jobs.execute(job_id) for job_id in ids]
