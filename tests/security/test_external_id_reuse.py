"""Reusing an external_id: the same subject gets its request back, another subject a 409.

Before, the second request for another person under a used external_id answered 200 with the
first person's request, and the second person's erasure was silently dropped. Covered on every
intake path: single and batch (the unit of work, and PostgreSQL's fast path on the services
pass), under an Idempotency-Key, and `obliviate requests import`.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.objects import hold_kinds, request_body

URL = "/v1/erasure-requests"
CONFLICT_TYPE = "https://obliviate.dev/problems/external-id-conflict"


@pytest.fixture(autouse=True)
def user_id_held(client, headers):
    """The client holds user_id (as a dataset keyed by it would make it), so requests by it are accepted."""
    hold_kinds(client, headers, "user_id")


def body(user_id: str, external_id: str, **extra):
    return request_body(identifiers={"user_id": user_id}, external_id=external_id, **extra)


def count_for(external_id: str) -> int:
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.external_id == external_id))


@pytest.mark.parametrize("idempotency", [False, True])
def test_single_intake_same_subject_200_other_subject_409(client, headers, idempotency):
    external_id = f"ticket-{uuid.uuid4().hex[:8]}"
    first = client.post(URL, json=body("alice-1", external_id), headers=headers)
    assert first.status_code == 201, first.text
    keyed = (lambda: {**headers, "Idempotency-Key": uuid.uuid4().hex}) if idempotency else (lambda: headers)

    same = client.post(URL, json=body("alice-1", external_id), headers=keyed())
    assert same.status_code == 200
    assert same.json()["id"] == first.json()["id"]

    other = client.post(URL, json=body("bob-2", external_id), headers=keyed())
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    problem = other.json()
    assert problem["type"] == CONFLICT_TYPE
    assert "different subject" in problem["detail"]
    assert first.json()["id"] not in other.text and "bob-2" not in other.text and "alice-1" not in other.text
    assert count_for(external_id) == 1


def test_more_identifiers_is_another_subject(client, headers):
    external_id = f"ticket-{uuid.uuid4().hex[:8]}"
    assert client.post(URL, json=body("carol-3", external_id), headers=headers).status_code == 201
    wider = body("carol-3", external_id)
    wider["subject"]["identifiers"]["email"] = "carol@example.org"
    assert client.post(URL, json=wider, headers=headers).status_code == 409


def test_batch_against_stored_and_within_itself(client, headers):
    stored = f"ticket-{uuid.uuid4().hex[:8]}"
    inner = f"ticket-{uuid.uuid4().hex[:8]}"
    assert client.post(URL, json=body("dave-4", stored), headers=headers).status_code == 201
    items = [
        body("dave-4", stored),   # same subject as stored → existing
        body("erin-5", stored),   # another subject → 409
        body("frank-6", inner),   # new
        body("frank-6", inner),   # repeat, same subject → existing
        body("grace-7", inner),   # repeat, another subject → 409
    ]
    response = client.post(f"{URL}/batch", json=items, headers=headers)
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    assert [(item["result"], item["status"]) for item in results] == [
        ("existing", 200), ("error", 409), ("created", 201), ("existing", 200), ("error", 409),
    ]
    assert results[1]["problem"]["type"] == results[4]["problem"]["type"] == CONFLICT_TYPE
    assert results[3]["request"]["id"] == results[2]["request"]["id"]
    assert response.json()["errors"] == 2
    assert count_for(stored) == count_for(inner) == 1


def test_batch_conflict_with_a_request_stored_meanwhile(client, headers):
    """Every item new in the batch's plan, but one external_id is already stored: the path that
    reads the owners back after the insert skipped them."""
    external_id = f"ticket-{uuid.uuid4().hex[:8]}"
    assert client.post(URL, json=body("heidi-8", external_id), headers=headers).status_code == 201
    response = client.post(f"{URL}/batch", json=[body("ivan-9", external_id), body("judy-10", f"t-{uuid.uuid4().hex}")],
                           headers=headers)
    assert [item["status"] for item in response.json()["items"]] == [409, 201]


def test_import_reports_conflicts_per_line_without_content(tmp_path, client, headers):
    from app.cli import cli

    external_id = f"ticket-{uuid.uuid4().hex[:8]}"
    lines = [body("kim-11", external_id), body("kim-11", external_id), body("leo-12", external_id)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = CliRunner().invoke(cli, ["requests", "import", str(path), "--client", "acme"])
    assert result.exit_code == 1, result.output
    assert "line 3: external_id already used by a request for a different subject" in result.output
    assert "line 1:" not in result.output and "line 2:" not in result.output
    assert "leo-12" not in result.output and "kim-11" not in result.output
    again = CliRunner().invoke(cli, ["requests", "import", str(path), "--client", "acme"])
    assert "line 3: external_id already used" in again.output
    assert count_for(external_id) == 1
