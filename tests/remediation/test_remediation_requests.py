"""Remediation requests over the API without training: metadata columns, the dry run's refusals
(nothing matched, the fraction limit and its override), hostile predicates, four eyes, audited
reads of group columns, and a slice removed from a dataset no model was trained on."""

from __future__ import annotations

import uuid

import pytest

from tests.dataset_files import FEATURES, parquet_bytes, poisoned_digits, upload
from tests.factories import assert_problem
from tests.worker import execute_queued


def _create(client, headers, dataset_id: str, **body):
    return client.post("/v1/remediation-requests", headers=headers,
                       json={"kind": "quality", "reason": "mislabelled batch", "dataset_id": dataset_id, **body})


def _count(client, headers) -> int:
    return len(client.get("/v1/remediation-requests", headers=headers).json()["items"])


def test_metadata_columns_are_stored_and_never_features(client, writer, dataset):
    from app.artifacts.store import get_store
    from app.datasets.ingest import read_version_table

    detail = client.get(f"/v1/datasets/{dataset}", headers=writer).json()
    assert detail["columns"] == FEATURES  # neither source nor group is a feature
    assert detail["metadata"] == {"columns": ["source", "group"], "group_columns": ["group"], "source_column": "source"}
    stored = read_version_table(get_store(), detail["versions"][0]["sha256"])
    assert stored.column_names[-2:] == ["source", "group"]
    assert stored.column("source").type == "string"
    # A later upload must declare the same metadata (here: group no longer a group column).
    clash = upload(client, writer, parquet_bytes(poisoned_digits(subjects=100)), name="sliced",
                   metadata_columns="source,group", source_column="source")
    assert_problem(clash, 409)
    # A group column must be a metadata column.
    assert_problem(upload(client, writer, parquet_bytes(poisoned_digits(subjects=100)), name="other",
                          metadata_columns="source", group_columns="group"), 422)


def test_nothing_matched_is_refused_with_the_figures(client, writer, dataset):
    problem = assert_problem(_create(client, writer, dataset, source="vendor-z"), 422)
    assert problem["figures"]["records"] == 0 and problem["figures"]["rows"] > 0
    assert _count(client, writer) == 0


def test_the_fraction_limit_and_its_override(client, writer, dataset, settings_env):
    settings_env(MAX_REMEDIATION_FRACTION="0.05")
    problem = assert_problem(_create(client, writer, dataset, predicate="digit in [1, 2]"), 422)
    figures = problem["figures"]
    assert figures["fraction"] > 0.05 and figures["max_fraction"] == 0.05
    assert figures["records"] == figures["versions"][0]["records"] > 0
    assert _count(client, writer) == 0
    allowed = _create(client, writer, dataset, predicate="digit in [1, 2]", override_fraction=True)
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["dry_run"]["records"] == figures["records"]
    # Below the limit no override is needed.
    assert _create(client, writer, dataset, source="vendor-b").status_code == 201


@pytest.mark.parametrize("text", [
    'salary > 3', 'pixel_0 == "a"', '"; DROP TABLE datasets; --', '__import__("os")', "(" * 30 + "pixel_0 == 1" + ")" * 30,
    "pixel_0 == " + "9" * 5000, 'source == "someone@example.org"',
])
def test_hostile_predicates_answer_422_and_store_nothing(client, writer, dataset, text):
    response = _create(client, writer, dataset, predicate=text)
    problem = assert_problem(response, 422)
    for fragment in ("DROP", "__import__", "someone", "salary", "99999"):
        assert fragment not in response.text
    assert "detail" in problem
    assert _count(client, writer) == 0


def test_bad_bodies_are_refused(client, writer, dataset):
    assert_problem(_create(client, writer, dataset, source="vendor-b", record_ids=[1]), 422)  # two selections
    assert_problem(_create(client, writer, dataset, source="vendor-b", trigger={"features": {"pixel_0": 1},
                                                                               "target_label": 7}), 422)
    assert_problem(_create(client, writer, dataset, source="vendor-b", kind="poisoning",
                           trigger={"features": {"source": 1}, "target_label": 7}), 422)  # not a feature
    assert_problem(_create(client, writer, dataset, source="vendor-b", kind="bias", group_column="pixel_3"), 422)
    assert_problem(_create(client, writer, dataset, source="vendor-b", reason="ask ann@example.org"), 422)
    assert _count(client, writer) == 0


def test_four_eyes_and_deny(client, writer, reviewer, dataset):
    created = _create(client, writer, dataset, source="vendor-b").json()
    url = f"/v1/remediation-requests/{created['id']}"
    assert_problem(client.post(f"{url}/approve", headers=writer), 403)
    denied = client.post(f"{url}/deny", headers=reviewer, json={"reason": "not the mislabelled batch"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert_problem(client.post(f"{url}/approve", headers=reviewer), 409)
    types = [e["type"] for e in client.get(f"{url}/audit", headers=reviewer).json()["events"]]
    assert types == ["remediation.created", "remediation.denied"]
    # Another client's request does not exist for the caller.
    assert client.get(url, headers=reviewer).status_code == 200


def test_reading_a_group_column_is_audited(client, writer, reviewer, dataset):
    plain = _create(client, writer, dataset, source="vendor-b").json()
    grouped = _create(client, writer, dataset, predicate='group == "north" and source == "vendor-b"').json()

    def events(request_id):
        return client.get(f"/v1/remediation-requests/{request_id}/audit", headers=reviewer).json()["events"]

    assert [e for e in events(plain["id"]) if e["type"] == "dataset.group_columns_read"] == []
    read = [e for e in events(grouped["id"]) if e["type"] == "dataset.group_columns_read"]
    assert len(read) == 1 and read[0]["data"]["columns"] == ["group"] and read[0]["data"]["purpose"] == "dry_run"


def test_a_slice_by_record_ids_leaves_a_dataset_without_models(client, writer, reviewer, admin, dataset, tmp_path):
    from typer.testing import CliRunner

    from app.cli import cli

    created = _create(client, writer, dataset, record_ids=[0, 1, 2, 5000]).json()
    assert created["dry_run"]["records"] == 3 and created["dry_run"]["models"] == []
    assert created["selection"] == {"by": "record_ids", "record_ids": 4}
    url = f"/v1/remediation-requests/{created['id']}"
    assert client.post(f"{url}/approve", headers=reviewer).status_code == 200
    assert execute_queued("remediation") == ["completed"]
    done = client.get(url, headers=reviewer).json()
    assert done["status"] == "completed" and done["result"]["dataset"]["rows_removed"] == 3
    versions = client.get(f"/v1/datasets/{dataset}", headers=writer).json()["versions"]
    by_number = {v["version"]: v for v in versions}
    assert by_number[2]["current"] and by_number[2]["rows"] == by_number[1]["rows"] - 3
    assert by_number[1]["destroyed"]  # no model needed the version that held the slice

    response = client.get(f"{url}/certificate", headers=reviewer)
    path = tmp_path / "remediation.json"
    path.write_bytes(response.content)
    public = client.get("/v1/keys/signing").json()["public_key"]
    result = CliRunner().invoke(cli, ["certificate", "verify", str(path), "--public-key", public])
    assert result.exit_code == 0, result.output
    assert "VALID certificate of remediation" in result.output
    # The service's own verification of the trail covers certificates of remediation too.
    report = client.get("/v1/audit/verify", headers=admin).json()
    assert report["valid"] is True and report["log"]["certificates"] == 1, report
    tampered = response.content.replace(b'"records":3', b'"records":2')
    assert tampered != response.content
    path.write_bytes(tampered)
    assert CliRunner().invoke(cli, ["certificate", "verify", str(path), "--public-key", public]).exit_code == 1


def test_a_remediation_waits_while_an_unlearning_job_of_its_dataset_runs(client, writer, reviewer, dataset):
    """Both make a new dataset version from the current one: side by side, the later would bring
    back what the earlier removed (app/unlearning/exclusive.py)."""
    from app.db import session_scope
    from app.jobs import service as job_service
    from app.unlearning import exclusive

    with session_scope() as session:
        running = job_service.create(session, client="acme", kind="unlearning", model_id=None,
                                     payload={"dataset_id": dataset})
        running.status = "running"
    created = _create(client, writer, dataset, source="vendor-b").json()
    job_id = uuid.UUID(client.post(f"/v1/remediation-requests/{created['id']}/approve", headers=reviewer).json()["job_id"])
    with session_scope() as session:
        assert exclusive.blocked(session, job_id)
        session.get(type(running), running.id).status = "completed"
    with session_scope() as session:
        assert not exclusive.blocked(session, job_id)
