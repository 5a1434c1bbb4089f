"""Identity resolution's parts (app/identities/, app/datasets/identifiers.py): identifier
columns at upload, declared links, known kinds, the closure's bound, and what a request searched."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.dataset_files import csv_bytes
from tests.identities.helpers import (
    JANE_EMAIL, JANE_ID, SCOPES, approve_and_plan, people_table, request_by, run_unlearning_jobs, upload_people,
)
from tests.text_files import upload_text

LINKS = "/v1/identities/links"


@pytest.fixture
def writer(make_key, settings_env):
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0")
    return make_key(SCOPES, client="ids")


def _link(client, headers, *identifiers: tuple[str, str]):
    return client.post(LINKS, json={"identifiers": [{"kind": k, "value": v} for k, v in identifiers]}, headers=headers)


def _status(client, headers, request_id: str) -> tuple[str, str | None]:
    body = client.get(f"/v1/erasure-requests/{request_id}", headers=headers).json()
    return body["status"], body["status_reason"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"identifier_columns": "email"}, "not a JSON object"),
    ({"identifier_columns": '{"email": "mail"}'}, "'mail' is not a column"),
    ({"identifier_columns": '{"E-Mail": "email"}'}, "lower-case words"),
    ({"identifier_columns": '{"user_id": "email"}'}, "may not repeat the subject kind"),
    ({"identifier_columns": '{"email": "email"}', "feature_columns": "f0,email"}, "also the subject, label, text or a feature"),
])
def test_identifier_columns_are_checked_before_anything_is_stored(client, writer, fields, message):
    response = upload_people(client, writer, **fields)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_an_invalid_identifier_refuses_the_upload_by_record_number_never_by_value(client, writer):
    table = people_table()
    emails = table.column("email").to_pylist()
    emails[4] = "not-an-address"
    response = upload_people(client, writer, name="bad")  # the good file first: the kind becomes held
    assert response.status_code == 201
    from tests.dataset_files import upload

    bad = upload(client, writer, csv_bytes(table.set_column(1, "email", [emails])), name="bad2",
                 identifier_columns='{"email": "email"}')
    assert bad.status_code == 422
    assert "Record 5" in bad.json()["detail"] and "not-an-address" not in bad.text


def test_blank_identifiers_are_no_identifiers(client, writer):
    table = people_table()
    emails = [None if i % 2 else e for i, e in enumerate(table.column("email").to_pylist())]
    from tests.dataset_files import upload

    response = upload(client, writer, csv_bytes(table.set_column(1, "email", [emails])), name="sparse",
                      identifier_columns='{"email": "email"}')
    assert response.status_code == 201, response.text


def test_a_text_dataset_links_its_identifier_column(client, writer):
    lines = [{"user_id": JANE_ID, "email": JANE_EMAIL, "text": "a note"}, {"user_id": "u-x", "email": None, "text": "b"}]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    response = upload_text(client, writer, content, identifier_columns='{"email": "email"}')
    assert response.status_code == 201, response.text
    created = request_by(client, writer, {"email": JANE_EMAIL.lower()})
    approve_and_plan(client, writer, created.json()["id"])
    searched = client.get(f"/v1/erasure-requests/{created.json()['id']}", headers=writer).json()["searched"]
    assert searched["subjects"] == 2 and searched["checked"][0]["held"] is True


def test_unknown_kinds_answer_422_listing_the_known_ones(client, writer):
    assert upload_people(client, writer).status_code == 201
    for response in (
        request_by(client, writer, {"userid": JANE_ID}),
        client.post("/v1/subjects/lookup", json={"identifiers": {"userid": JANE_ID}}, headers=writer),
        _link(client, writer, ("userid", JANE_ID), ("customer", "c-1")),
    ):
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["unknown_kinds"][0] in ("customer", "userid")
        assert problem["known_kinds"] == ["email", "phone", "user_id"]
        assert JANE_ID not in response.text
    batch = client.post("/v1/erasure-requests/batch", headers=writer, json=[
        {"subject": {"identifiers": {"userid": "u-1"}}, "jurisdiction": "gdpr", "source": "batch"},
        {"subject": {"identifiers": {"user_id": "u-1"}}, "jurisdiction": "gdpr", "source": "batch"},
    ]).json()
    assert [item["status"] for item in batch["items"]] == [422, 201]
    assert batch["items"][0]["problem"]["known_kinds"] == ["email", "phone", "user_id"]


def test_a_declared_link_resolves_a_request_per_client_and_is_audited(client, writer, make_key):
    from app.audit.models import AuditEvent
    from app.db import session_scope

    upload = upload_people(client, writer, identifier_columns=None, feature_columns="f0,f1")
    assert upload.status_code == 201
    linked = _link(client, writer, ("email", "jane@crm.example"), ("user_id", JANE_ID), ("crm_id", "crm-77"))
    assert linked.status_code == 201, linked.text
    assert linked.json()["kinds"] == ["crm_id", "email", "user_id"] and "jane@crm" not in linked.text
    with session_scope() as session:
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.stream == "identities:ids"))
        assert event.type == "identity.linked" and event.data["identifiers"] == 3
        assert "crm-77" not in json.dumps(event.data)
    # The link's new kind is known now; a request by it reaches the user_id rows.
    by_crm = request_by(client, writer, {"crm_id": "crm-77"})
    assert by_crm.status_code == 201, by_crm.text
    approve_and_plan(client, writer, by_crm.json()["id"])
    assert _status(client, writer, by_crm.json()["id"]) == ("scheduled", None)
    assert run_unlearning_jobs() == ["completed"]

    # Another client's request by the same e-mail is not resolved through this client's link.
    other = make_key(SCOPES, client="ids-other")
    assert upload_people(client, other, identifier_columns=None, feature_columns="f0,f1").status_code == 201
    theirs = request_by(client, other, {"email": "jane@crm.example"})
    approve_and_plan(client, other, theirs.json()["id"])
    assert _status(client, other, theirs.json()["id"]) == ("needs_review", "unresolvable_identifier_kind")


def test_a_closure_past_32_keys_waits_for_review(client, writer):
    assert upload_people(client, writer).status_code == 201
    hub = ("email", "shared-inbox@example.org")
    for start in (0, 31):
        response = _link(client, writer, hub, *[("user_id", f"u-many-{i}") for i in range(start, start + 31)])
        assert response.status_code == 201, response.text
    created = request_by(client, writer, {"email": "shared-inbox@example.org"})
    approve_and_plan(client, writer, created.json()["id"])
    assert _status(client, writer, created.json()["id"]) == ("needs_review", "identity_closure_too_large")
    # A reviewer may still decide: deny it (or approve it once the links are fixed).
    denied = client.post(f"/v1/erasure-requests/{created.json()['id']}/deny", headers=writer,
                         json={"reason": "One inbox shared by many accounts."})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"


def test_unresolvable_kinds_may_complete_as_before(client, writer, settings_env):
    settings_env(UNRESOLVABLE_KIND="complete")
    assert upload_people(client, writer).status_code == 201
    created = request_by(client, writer, {"phone": "+44 20 7946 0958"})
    approve_and_plan(client, writer, created.json()["id"])
    body = client.get(f"/v1/erasure-requests/{created.json()['id']}", headers=writer).json()
    assert (body["status"], body["outcome"]) == ("completed", "no_data_found")
    assert body["searched"]["checked"] == [
        {"type": "dataset", "id": body["searched"]["checked"][0]["id"], "name": "people", "version": 1, "held": False}]


def test_searched_for_answers_typed_records(client, writer):
    import uuid

    from app.db import session_scope
    from app.identities import service

    assert upload_people(client, writer).status_code == 201
    created = request_by(client, writer, {"email": JANE_EMAIL})
    request_id = uuid.UUID(created.json()["id"])
    with session_scope() as session:
        assert service.searched_for(session, request_id) is None
    approve_and_plan(client, writer, str(request_id))
    with session_scope() as session:
        searched = service.searched_for(session, request_id)
    assert searched is not None and searched.kinds == ("email",) and searched.subjects == 2
    assert [(c.type, c.name, c.held) for c in searched.checked] == [("dataset", "people", True)]
