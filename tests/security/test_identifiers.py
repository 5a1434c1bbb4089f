"""Identifiers: subject keys are frozen, and intake validates what it accepts.

Raw identifiers are never stored, so a subject key computed today can never be recomputed from
anything but the same input: the HMAC key bytes and the normalisation fed to it must not change
for any input accepted today. The table below was computed with the code as it was before
identifier validation existed; every row must keep its digest.
"""

from __future__ import annotations

import uuid

import pytest

from app.pseudonym import normalise_identifier, subject_key
from tests.objects import hold_kinds, request_body

SECRET = b"test-secret-key-for-pseudonyms-0123456789"

# (kind, value as sent, normalised form, subject key under SECRET)
PINNED = [
    ("email", "jane@example.org", "jane@example.org", "cdddca6384fa3d97ff0f8f44ff8c9c86976f0a6dd1260e161c9af9e6b7f69d39"),
    ("email", "  Jane.Doe@Example.ORG ", "jane.doe@example.org", "3b8b6019eccfdf81cf38b14a5d9703a9cd38e76b0c23dcfb341ce3460cb0574a"),
    ("email", "ＪＡＮＥ@example.org", "jane@example.org", "cdddca6384fa3d97ff0f8f44ff8c9c86976f0a6dd1260e161c9af9e6b7f69d39"),
    ("email", "user+tag@sub.example.co.uk", "user+tag@sub.example.co.uk", "73aeb7d7cac3493ea381e0a1d782b751d086265a3acdb9b3ab3a8c7b1ed360a1"),
    ("email", "Müller@Beispiel.de", "müller@beispiel.de", "b5710970a0dd707f2f55374d8282d0f890d9a5c576695a1f6dc49cd6245919e5"),
    ("email", "a@b", "a@b", "de8f656d1db7d77b7cd548487f606d5785674ffc1b2f0442c3392e26795d52e9"),
    ("email", "o'brien@example.ie", "o'brien@example.ie", "2bb2567389d943604c0da08b0972fe76eee7a523d12728477de2b0f53ae24ec1"),
    ("phone", "+1 (555) 010-2030", "15550102030", "f8ceb53e3baa76b80c842fdf1cbcf2a3a20ffed9ba2cbadc97d76b482be952ff"),
    ("phone", "+44 20 7946 0958", "442079460958", "3840ec26ee7a9e260eb9b4caadc36f9a0e07dde4d762aff2ca6c012d11cdcc31"),
    ("phone", "0049-30-1234567", "0049301234567", "bef4c270e1c52cb184d3e81a029409d9964df6f84c8f887d02a2cf395f8f0773"),
    ("phone", "555.010.2030", "5550102030", "95dcf21f789e2118a0d2853f062d4a5da255dc7ee9411a9c94eec61e8c53d56d"),
    ("phone", "+33 6 12 34 56 78", "33612345678", "ff8bd5acc8be236a9e8c5b5d6336b8bbe608a3fce25dc8dc5d45bf13c6408bfe"),
    ("user_id", "user-42", "user-42", "0788331edf8e161a01a12fbbb0ac9169ac6e36055703514ab1c15f92265ac3c4"),
    ("user_id", "  User-42  ", "User-42", "25cb86dab49b56215d81de77fef51719b16966428610ff687f18b6c5c8c9a661"),
    ("user_id", "ｕｓｅｒ４２", "user42", "0b87506b684699d8df078d7f3f4d36729380254eb16865657257049c418e33b8"),
    ("user_id", "café", "café", "d928eb12aae4384784c8fc6977bb0304ede580af4cb8837879d63621e09e3b77"),
    ("user_id", "cafe\u0301", "café", "d928eb12aae4384784c8fc6977bb0304ede580af4cb8837879d63621e09e3b77"),
    ("user_id", "ﬁle", "file", "6741cbb015a1c275fbbcc6ec49b15000bed7901d183409f15d6a2c8cfb7074c3"),
    ("account_id", "123456789012345678", "123456789012345678", "a64ce02eabc40317cde46b0ba4855333ad4f73c181887efb6ca51911b5f6f48f"),
    ("device_id", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "1998a1267483cbf23083fa170446aefa03c13d4d19539b724a918be00f493c62"),
    ("customer_ref", "Kunde Nr. 7", "Kunde Nr. 7", "1e32f27c35e151fc08b5827b4cf460da41e9ec42c49380ff984d98cd2cc341ad"),
    # The `creator` kind of text datasets (an artist's or author's works) takes the generic path;
    # pinned when it was introduced.
    ("creator", "Ada Lovelace", "Ada Lovelace", "a7098240b3435218763ed46ef1a7de0873a099f623d5fa5d1c4f0c4b35846bde"),
    ("creator", "  Studio Ｇhibli ", "Studio Ghibli", "466305aaa12ee0b8ea77843bc45888564b74c2a6bb10ac8ac4a02e48daacf36e"),
]


@pytest.mark.parametrize(("kind", "value", "normalised", "key"), PINNED)
def test_subject_keys_are_frozen(kind, value, normalised, key):
    assert normalise_identifier(kind, value) == normalised
    assert subject_key(kind, value, SECRET) == key


# Accepted before validation existed, refused now: validation may only ever refuse.
REFUSED_NOW = {("email", "a@b")}


@pytest.mark.parametrize(("kind", "value", "normalised", "key"), [row for row in PINNED if row[:2] not in REFUSED_NOW])
def test_intake_stores_the_pinned_subject_key(client, headers, kind, value, normalised, key):
    """Through the API, with the test suite's secret (the same bytes as SECRET)."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.requests.models import RequestSubject
    from tests.conftest import TEST_SECRET

    assert TEST_SECRET.encode() == SECRET
    if kind not in ("email", "phone"):
        hold_kinds(client, headers, kind)
    body = request_body(identifiers={kind: value})
    response = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert response.status_code == 201, response.text
    with session_scope() as session:
        stored = session.scalars(select(RequestSubject.subject_key).where(
            RequestSubject.request_id == uuid.UUID(response.json()["id"]))).all()
    assert stored == [key]


@pytest.mark.parametrize(("kind", "value"), [
    ("email", "a@b"), ("email", "jane@localhost"), ("email", "jane..doe@example.org"), ("email", "jane@exa mple.org"),
    ("email", "jane@@example.org"), ("email", "jane@example..org"), ("email", "jane@-example.org"),
    ("email", "jane@[127.0.0.1]"), ("phone", "+1 2"), ("phone", "+0 123 4567"), ("phone", "12-34"),
    ("phone", "+44 20 7946 0958 12345 678"),
    ("email", "ja\u200bne@example.org"), ("email", "jane@example.org\u200b"), ("user_id", "user\u200b42"),
    ("user_id", "user\x0742"), ("user_id", "u\u202eser42"), ("user_id", "user\ufeff42"), ("user_id", "user\u206042"),
    ("user_id", "us\u00aded"), ("customer_ref", "a\x1fb"), ("customer_ref", "a\u2028b"), ("phone", "+44 20\u200b7946 0958"),
])
def test_invalid_identifiers_are_refused_without_echo(client, headers, kind, value):
    body = request_body(identifiers={kind: value})
    response = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert value not in response.text
    batch = client.post("/v1/erasure-requests/batch", json=[body], headers=headers)
    assert batch.json()["items"][0]["status"] == 422


def test_validation_never_changes_what_is_hashed():
    """validate_identifier only raises: for every pinned input it accepts, the MAC input is the
    frozen normalisation, byte for byte."""
    from app.pseudonym import IdentifierError, validate_identifier

    for kind, value, normalised, key in PINNED:
        try:
            assert validate_identifier(kind, value) is None
        except IdentifierError:
            assert (kind, value) in REFUSED_NOW
            continue
        assert normalise_identifier(kind, value) == normalised
        assert subject_key(kind, value, SECRET) == key
