"""Issue 22's walk, end to end: data keyed by user_id with an e-mail identifier column, a
request by e-mail in another letter case, approved; the person's rows are gone, the request says
what was searched, and a request by a kind nothing holds waits in needs_review."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from tests.identities.helpers import JANE_EMAIL, JANE_ID, SCOPES, approve_and_plan, request_by, run_unlearning_jobs, upload_people


@pytest.fixture
def writer(make_key, settings_env):
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0")
    return make_key(SCOPES, client="walk")


def _links_of(client: str) -> int:
    from app.db import session_scope
    from app.identities.models import IdentityLink

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(IdentityLink).where(IdentityLink.client == client))


def _verified(client, headers, request_id: str, tmp_path) -> tuple[dict, str]:
    """The request's certificate body, and what `obliviate certificate verify` prints of it."""
    from typer.testing import CliRunner

    from app.cli import cli

    response = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=headers)
    assert response.status_code == 200, response.text
    path = tmp_path / f"{request_id}.json"
    path.write_bytes(response.content)
    public = client.get("/v1/keys/signing").json()["public_key"]
    result = CliRunner().invoke(cli, ["certificate", "verify", str(path), "--public-key", public])
    assert result.exit_code == 0, result.output
    return response.json()["certificate"], result.output


def test_a_request_by_email_erases_the_rows_keyed_by_user_id(client, writer, data_dir, tmp_path):
    uploaded = upload_people(client, writer)
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    # The identifier column is no feature, and neither its name's values nor the column are stored.
    assert dataset["columns"] == ["f0", "f1"] and dataset["rows"] == 27
    stored = pq.read_table(next((data_dir / "artifacts").rglob(dataset["sha256"])))
    assert stored.column_names == ["record_id", "subject_key", "label", "f0", "f1"]
    assert _links_of("walk") == 13

    created = request_by(client, writer, {"email": JANE_EMAIL.upper()})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    approve_and_plan(client, writer, request_id)
    assert run_unlearning_jobs() == ["completed"]

    done = client.get(f"/v1/erasure-requests/{request_id}", headers=writer).json()
    assert done["status"] == "completed" and done["outcome"] != "no_data_found", done
    assert done["searched"]["kinds"] == ["email"]
    assert done["searched"]["subjects"] == 2  # the e-mail's key and the user_id it is linked to
    assert [(c["type"], c["name"], c["version"], c["held"]) for c in done["searched"]["checked"]] == [
        ("dataset", "people", 1, True)]
    # The certificate states what was searched: the e-mail, the user_id it led to, the dataset.
    certificate, printed = _verified(client, writer, request_id, tmp_path)
    assert certificate["scope"]["identifier_kinds"] == ["email"]
    assert certificate["scope"]["resolved_kinds"] == ["email", "user_id"]
    assert certificate["scope"]["subject_keys_searched"] == 2
    assert certificate["scope"]["datasets"] == [{"name": "people", "version": 1, "held_subject": True}]
    assert "searched identifier kinds email (and, through links, user_id)" in printed
    assert "searched dataset people v1: held the person" in printed
    assert JANE_EMAIL.lower() not in json.dumps(certificate).lower()
    detail = client.get(f"/v1/datasets/{dataset['dataset_id']}", headers=writer).json()
    assert detail["current_version"] == 2
    assert [v["rows"] for v in detail["versions"]] == [27, 24]
    # Her rows are gone from the current version, and erasing her removed her link.
    found = client.post("/v1/subjects/lookup", json={"identifiers": {"user_id": JANE_ID}}, headers=writer).json()
    assert all(not d["current"] for d in found["datasets"]), found
    assert _links_of("walk") == 12
    # The subject look-up by her user_id names the request that erased her, though it named her e-mail.
    from app.dashboard import queries
    from app.db import session_scope
    from app.keys.service import Principal
    from app.pseudonym import subject_key

    with session_scope() as session:
        reader = Principal("00000000-0000-0000-0000-000000000000", "walk", "test", frozenset({"requests:read"}))
        erasures = queries.erasures_of(session, reader, [subject_key("user_id", JANE_ID)])
    assert [(str(e.request_id), e.outcome) for e in erasures] == [(request_id, "erased")]

    unheld = request_by(client, writer, {"phone": "+44 20 7946 0958"})
    assert unheld.status_code == 201, unheld.text
    approve_and_plan(client, writer, unheld.json()["id"])
    waiting = client.get(f"/v1/erasure-requests/{unheld.json()['id']}", headers=writer).json()
    assert waiting["status"] == "needs_review"
    assert waiting["status_reason"] == "unresolvable_identifier_kind"
    assert {k: waiting["searched"][k] for k in ("kinds", "subjects", "checked")} == {"kinds": ["phone"], "subjects": 1, "checked": []}


def test_a_no_data_found_certificate_says_which_kinds_and_datasets_were_searched(client, writer, tmp_path):
    assert upload_people(client, writer).status_code == 201
    created = request_by(client, writer, {"email": "nobody@example.org"})
    approve_and_plan(client, writer, created.json()["id"])
    done = client.get(f"/v1/erasure-requests/{created.json()['id']}", headers=writer).json()
    assert (done["status"], done["outcome"]) == ("completed", "no_data_found")
    certificate, printed = _verified(client, writer, created.json()["id"], tmp_path)
    assert certificate["scope"]["identifier_kinds"] == certificate["scope"]["resolved_kinds"] == ["email"]
    assert certificate["scope"]["datasets"] == [{"name": "people", "version": 1, "held_subject": False}]
    assert "searched dataset people v1: did not hold the person" in printed


def test_before_identifier_columns_the_same_walk_completes_as_no_data_found(client, writer):
    """The walk as it was: without the identifier column the e-mail finds no one, and (e-mail
    being held by nothing) the request now waits for review instead of completing."""
    assert upload_people(client, writer, identifier_columns=None, feature_columns="f0,f1").status_code == 201
    created = request_by(client, writer, {"email": JANE_EMAIL})
    approve_and_plan(client, writer, created.json()["id"])
    waiting = client.get(f"/v1/erasure-requests/{created.json()['id']}", headers=writer).json()
    assert (waiting["status"], waiting["status_reason"]) == ("needs_review", "unresolvable_identifier_kind")
