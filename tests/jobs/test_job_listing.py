"""GET /v1/jobs: the client's own jobs, filtered by kind, status and model, with the cursor."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests import objects

URL = "/v1/jobs"


def make_job(client_name: str, kind: str = "training", status: str = "queued", model_id: str | None = None) -> str:
    from app.db import session_scope, utcnow
    from app.jobs import service

    with session_scope() as session:
        # not_before in the future: the job is never sent to a queue.
        job = service.create(session, client=client_name, kind=kind, payload={},
                             model_id=uuid.UUID(model_id) if model_id else None, not_before=utcnow() + timedelta(days=1))
        job.status = status
        return str(job.id)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_filters_by_kind_and_status(client, make_key):
    headers = make_key("requests:read", client="jobs-a")
    training = make_job("jobs-a")
    unlearning = make_job("jobs-a", kind="unlearning", status="running")
    done = make_job("jobs-a", kind="unlearning", status="completed")
    assert ids(client.get(URL, headers=headers)) == [done, unlearning, training]
    assert ids(client.get(URL, params={"kind": "unlearning"}, headers=headers)) == [done, unlearning]
    assert ids(client.get(URL, params={"kind": "unlearning", "status": "running"}, headers=headers)) == [unlearning]
    assert ids(client.get(URL, params={"status": "failed"}, headers=headers)) == []
    for params in ({"kind": "cooking"}, {"status": "sleeping"}, {"model_id": "digits"}, {"limit": 0}):
        assert client.get(URL, params=params, headers=headers).status_code == 422


def test_filters_by_model(client, make_key):
    headers = make_key("models:write,models:read", client="jobs-m")
    dataset = objects.create_dataset(client, headers)
    model_id = objects.import_model(client, headers, dataset["id"])["id"]
    with_model = make_job("jobs-m", kind="rehearsal", model_id=model_id)
    without = make_job("jobs-m")
    listed = client.get(URL, params={"model_id": model_id}, headers=headers).json()["items"]
    assert with_model in [job["id"] for job in listed] and without not in [job["id"] for job in listed]
    assert {job["model_id"] for job in listed} == {model_id}


@pytest.mark.parametrize("scopes", ["requests:read", "admin"])
def test_another_clients_jobs_are_invisible(client, make_key, scopes):
    mine = make_job("jobs-own")
    theirs = make_job("jobs-other")
    headers = make_key(scopes, client="jobs-own")
    listed = ids(client.get(URL, headers=headers))
    assert mine in listed and theirs not in listed
    assert ids(client.get(URL, params={"kind": "training", "status": "queued"}, headers=headers)) == [mine]


def test_cursor_pages_through_every_job_once(client, make_key):
    headers = make_key("requests:read", client="jobs-p")
    created = [make_job("jobs-p") for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(URL, params=params, headers=headers).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]
    assert client.get(URL, params={"cursor": "not-a-cursor"}, headers=headers).status_code == 400


def test_needs_a_read_scope(client, make_key):
    assert client.get(URL, headers=make_key("requests:write", client="jobs-s")).status_code == 403
