"""Personal data in reasons and column names, written past the detector (issue 20, item 7).

Before: each disguise below was accepted with 200 as a reason (kept for good by the
append-only chain), and `…_at_example.org` as a column name. A reason given after intake
(hold, deny, extend) was checked only by the generic detector, so the request's own subject
spaced out letter by letter went through.
"""

from __future__ import annotations

from functools import partial

import pytest

from app.pii import find_identifier
from tests.dataset_files import csv_bytes, digits_table, upload
from tests.objects import hold_kinds, request_body

URL = "/v1/erasure-requests"
OWN_EMAIL = "pii3@example.org"
DISGUISES = [
    "jane at example.org", "jane_at_example_dot_org", "j.a.n.e @ example . org",
    "jane@example\u3002org", "jane@@example.org", "1\u2011202\u2011555\u20110199", "jane%u0040example.org",
    "jane\\u0040example.org", "jane-at-example-dot-org",
]
SPACED_OWN = "p i i 3 @ e x a m p l e . o r g"
ORDINARY = [
    "The requester asked at the desk.", "Held pending legal review at 2026-12-01", "data_at_rest column",
    "Meet at 10.30", "model version 1.2.3", "created_at", "Complex request; three systems hold data.",
]

body = partial(request_body, identifiers={"email": OWN_EMAIL})


@pytest.mark.parametrize("disguise", DISGUISES)
def test_each_disguise_is_found(disguise):
    assert find_identifier(f"Please erase {disguise} everywhere") is not None


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_not_taken_for_an_identifier(text):
    assert find_identifier(text) is None


@pytest.mark.parametrize("column", ["jane_at_example.org", "contact_at_example_dot_org", "x-at-example.com"])
def test_a_column_named_after_an_address_is_found(column):
    assert find_identifier(column) == "email"


@pytest.mark.parametrize("disguise", [*DISGUISES, SPACED_OWN])
def test_intake_refuses_the_reason(client, headers, disguise):
    response = client.post(URL, json=body(reason=f"Please erase {disguise} everywhere"), headers=headers)
    assert response.status_code == 422, response.text
    assert "jane" not in response.text and "pii3" not in response.text


@pytest.mark.parametrize("action", ["hold", "deny", "extend"])
@pytest.mark.parametrize("disguise", [*DISGUISES, SPACED_OWN, "P I I 3 (at) example (dot) org"])
def test_later_reasons_are_refused(client, headers, action, disguise):
    request_id = client.post(URL, json=body(), headers=headers).json()["id"]
    payload = {"reason": f"duplicate of {disguise}", **({"days": 10} if action == "extend" else {})}
    response = client.post(f"{URL}/{request_id}/{action}", json=payload, headers=headers)
    assert response.status_code == 422, response.text
    trail = client.get(f"{URL}/{request_id}/audit", headers=headers).text
    assert "duplicate of" not in trail


def test_a_later_reason_spelling_out_another_kind_of_own_identifier_is_refused(client, headers):
    hold_kinds(client, headers, "user_id")  # a kind the client holds, so the request is accepted
    identifiers = {"user_id": "customer-00042"}
    request_id = client.post(URL, json=request_body(identifiers=identifiers), headers=headers).json()["id"]
    spaced = "c u s t o m e r - 0 0 0 4 2"
    response = client.post(f"{URL}/{request_id}/hold", json={"reason": f"same person as {spaced}"}, headers=headers)
    assert response.status_code == 422
    fine = client.post(f"{URL}/{request_id}/hold", json={"reason": "waiting for the legal team"}, headers=headers)
    assert fine.status_code == 200, fine.text


def test_a_later_reason_naming_nobody_is_accepted(client, headers):
    request_id = client.post(URL, json=body(), headers=headers).json()["id"]
    response = client.post(f"{URL}/{request_id}/extend", json={"reason": "three systems hold data", "days": 20}, headers=headers)
    assert response.status_code == 200, response.text


def test_a_dataset_column_named_after_an_address_is_refused(client, make_key):
    writer = make_key("models:write,models:read")
    table = digits_table(subjects=30)
    renamed = table.rename_columns([*table.column_names[:-1], "jane_at_example.org"])
    response = upload(client, writer, csv_bytes(renamed), name="glued-column")
    assert response.status_code == 422, response.text
    assert "jane" not in response.text
