"""Personal data never comes back in error bodies, never reaches logs, and is refused in the
free text and metadata that are stored (reasons, external ids, keys, URLs, dataset schemas).

Before: a 422 echoed unknown field names, a header-less CSV import printed its first record,
uvicorn logged raw paths and query strings, and reasons, external ids, Idempotency-Keys, label
values and column names were stored as sent, with the reason's redaction bypassed by `%40`,
`＠`, zero-width spaces and "(at)".
"""

from __future__ import annotations

import logging
import signal
import uuid
from functools import partial

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.dataset_files import csv_bytes, digits_table, upload
from tests.objects import hold_kinds, request_body

URL = "/v1/erasure-requests"
EMAIL = "jane.leak@example.org"
DISGUISES = [
    "jane.leak%40example.org", "jane.leak%2540example.org", "jane.leak＠example.org", "jane.leak﹫example.org",
    "jane.\u200bleak@exam\u200bple.org", "jane.leak (at) example (dot) org", "jane.leak[at]example.org",
    "jane.leak&#64;example.org", "jane.leak at example dot org",
]


body = partial(request_body, identifiers={"email": EMAIL})


def assert_not_echoed(response, *values: str):
    text = response.text.lower()
    for value in values:
        assert value.lower() not in text, response.text


@pytest.mark.parametrize("where", ["top", "subject", "batch"])
def test_unknown_field_names_are_not_echoed(client, headers, where):
    bad = body()
    if where == "subject":
        bad["subject"][EMAIL] = 1
    else:
        bad[EMAIL] = 1
    if where == "batch":
        response = client.post(f"{URL}/batch", json=[bad], headers=headers)
        (item,) = response.json()["items"]
        assert item["status"] == 422
    else:
        response = client.post(URL, json={**bad, "subject": {**bad["subject"], "identifiers": {"user_id": "u-1"}}},
                               headers=headers)
        assert response.status_code == 422
        assert any(error["type"] == "extra_forbidden" and error["loc"][-1] == "<key>" for error in response.json()["errors"])
    assert_not_echoed(response, "jane.leak")


def test_model_params_keys_are_not_echoed(client, make_key):
    writer = make_key("models:write,models:read")
    dataset = upload(client, writer, csv_bytes(digits_table(subjects=30)))
    assert dataset.status_code == 201, dataset.text
    response = client.post("/v1/models", headers=writer, json={
        "name": "leak", "family": "logistic_regression", "dataset_id": dataset.json()["dataset_id"],
        "params": {EMAIL: 1},
    })
    assert response.status_code == 422
    assert_not_echoed(response, "jane.leak")


def test_a_header_less_csv_import_does_not_print_its_first_record(tmp_path, database_url):
    from app.cli import cli

    path = tmp_path / "no-header.csv"
    path.write_text(f"ticket-1,gdpr,batch,{EMAIL}\nticket-2,gdpr,batch,other@example.org\n")
    result = CliRunner().invoke(cli, ["requests", "import", str(path)])
    assert result.exit_code == 2
    assert "jane.leak" not in result.output and "ticket-1" not in result.output
    assert "column 1" in result.output


def test_the_access_log_has_route_templates_not_paths_or_queries(client, headers, caplog):
    caplog.set_level(logging.INFO, logger="obliviate.access")
    client.get(f"{URL}/{EMAIL}", headers=headers)
    client.get(f"{URL}?cursor={EMAIL}", headers=headers)
    client.get(f"/v1/no-such-route/{EMAIL}", headers=headers)
    lines = [record.getMessage() for record in caplog.records if record.name == "obliviate.access"]
    assert len(lines) == 3
    assert lines[0].startswith("GET /v1/erasure-requests/{request_id} 422")
    assert lines[1].startswith("GET /v1/erasure-requests 4")
    assert lines[2].startswith("GET <no route> 404")
    assert not any("jane" in line or "%40" in line for line in lines)


def test_serve_turns_uvicorn_access_log_off(monkeypatch, database_url):
    import uvicorn

    from app.cli import cli

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.update(kwargs))
    # serve installs its own SIGTERM handling, and ignores SIGTERM on its way out.
    saved = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(cli, ["serve", "--no-worker", "--port", "8799"])
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert result.exit_code == 0, result.output
    assert started["access_log"] is False


@pytest.mark.parametrize("external_id", [EMAIL, "jane.leak%40example.org", "+15550102030", "555-010-2030", "(555)010-2030"])
def test_an_external_id_that_is_an_identifier_is_refused(client, headers, external_id):
    response = client.post(URL, json=body(external_id=external_id), headers=headers)
    assert response.status_code == 422
    assert_not_echoed(response, external_id, "jane.leak", "5550102030")


@pytest.mark.parametrize("external_id", ["ORD-2026-000123", "ticket-77", "1234567890", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"])
def test_ordinary_external_ids_are_accepted(client, headers, external_id):
    hold_kinds(client, headers, "user_id")
    response = client.post(URL, json=body(external_id=external_id, subject={"identifiers": {"user_id": uuid.uuid4().hex}}),
                           headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("disguise", DISGUISES)
def test_reason_redaction_cannot_be_bypassed(client, headers, disguise):
    response = client.post(URL, json=body(reason=f"Please erase {disguise} everywhere"), headers=headers)
    assert response.status_code == 422, response.text
    assert_not_echoed(response, "jane.leak", disguise)


def test_the_subjects_own_identifier_in_disguise_is_refused(client, headers):
    subject = {"identifiers": {"user_id": "customer-4711"}}
    response = client.post(URL, json=body(subject=subject, reason="account customer\u200b-4711 closed"), headers=headers)
    assert response.status_code == 422
    response = client.post(URL, json=body(subject=subject, reason="account customer%2D4711 closed"), headers=headers)
    assert response.status_code == 422


def test_a_plain_own_identifier_is_still_redacted_and_others_refused(client, headers):
    created = client.post(URL, json=body(reason=f"Erase {EMAIL} please"), headers=headers)
    assert created.status_code == 201
    assert created.json()["reason"] == "Erase [redacted] please"
    other = client.post(URL, json=body(reason="and my brother bob@example.org"), headers=headers)
    assert other.status_code == 422
    assert_not_echoed(other, "bob@example.org")
    phone = client.post(URL, json=body(reason="call me on +44 20 7946 0958"), headers=headers)
    assert phone.status_code == 422


def test_review_reasons_are_checked(client, headers):
    request_id = client.post(URL, json=body(), headers=headers).json()["id"]
    for disguise in ("jane.leak＠example.org", "jane.leak%40example.org"):
        response = client.post(f"{URL}/{request_id}/deny", json={"reason": f"duplicate of {disguise}"}, headers=headers)
        assert response.status_code == 422
        assert_not_echoed(response, "jane.leak")
    assert client.post(f"{URL}/{request_id}/deny", json={"reason": "identity not verified"}, headers=headers).status_code == 200


def test_an_idempotency_key_that_is_an_identifier_is_refused(client, headers):
    for key in (EMAIL, "jane.leak%40example.org"):
        response = client.post(URL, json=body(), headers={**headers, "Idempotency-Key": key})
        assert response.status_code == 400
        assert_not_echoed(response, "jane.leak")
    assert client.post(f"{URL}/batch", json=[body()], headers={**headers, "Idempotency-Key": EMAIL}).status_code == 400


def test_callback_query_strings_with_identifiers_are_refused(client, headers):
    for callback in (f"https://hooks.example.com/cb?email={EMAIL}", "https://hooks.example.com/u/jane.leak%40example.org"):
        response = client.post(URL, json=body(callback_url=callback), headers=headers)
        assert response.status_code == 422
        assert_not_echoed(response, "jane.leak")


def test_dataset_column_names_and_labels_are_checked(client, make_key):
    writer = make_key("models:write,models:read")
    table = digits_table(subjects=30)
    renamed = table.rename_columns([*table.column_names[:-1], EMAIL])
    response = upload(client, writer, csv_bytes(renamed), name="leaky-columns")
    assert response.status_code == 422
    assert_not_echoed(response, "jane.leak")
    labels = pa.array([EMAIL if i % 2 else "other" for i in range(table.num_rows)])
    labelled = table.set_column(table.column_names.index("digit"), "digit", labels)
    response = upload(client, writer, csv_bytes(labelled), name="leaky-labels")
    assert response.status_code == 422
    assert_not_echoed(response, "jane.leak")


def test_a_form_column_that_is_an_identifier_is_not_echoed(client, make_key):
    writer = make_key("models:write,models:read")
    response = upload(client, writer, csv_bytes(digits_table(subjects=30)), subject_column=EMAIL)
    assert response.status_code == 422
    assert_not_echoed(response, "jane.leak")


def test_a_key_revocation_reason_is_checked(client, make_key):
    admin = make_key("admin", client="ops")
    key_id = client.get("/v1/keys", headers=admin).json()["items"][0]["id"]
    response = client.post(f"/v1/keys/{key_id}/revoke", json={"reason": "leaked by jane.leak%40example.org"}, headers=admin)
    assert response.status_code == 422
    assert_not_echoed(response, "jane.leak")
