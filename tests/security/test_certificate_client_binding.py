"""A certificate is bound to its client (issue 20, item 5): two clients' certificates for one
address name their clients and carry different subject digests, each confirmed only for its own
client by `obliviate certificate subject-digest`; `certificate verify` prints each model's method
kind and verdict next to VALID, for formats 1 to 3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from tests.objects import approve, hold_kinds, request_body
from tests.security.anchoring_helpers import URL

FROZEN = Path(__file__).parent / "frozen_certificates"


def _cli(*args: str, stdin: str | None = None):
    from app.cli import cli as command

    return CliRunner().invoke(command, list(args), input=stdin)


def _certificate(client, headers, email: str) -> dict:
    from app.db import session_scope
    from app.unlearning import planner

    hold_kinds(client, headers, "email")  # e-mail is held, so a request found nowhere completes as no_data_found
    rid = client.post(URL, json=request_body(identifiers={"email": email}), headers=headers).json()["id"]
    assert approve(client, headers, rid).status_code == 200
    with session_scope() as session:
        planner.plan_approved(session)
    response = client.get(f"{URL}/{rid}/certificate", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_clients_certificates_for_one_address_differ_and_name_their_clients(client, make_key, tmp_path):
    email = f"jane-{uuid.uuid4().hex[:6]}@example.org"
    a = _certificate(client, make_key(client="acme"), email)["certificate"]
    b = _certificate(client, make_key(client="globex"), email)["certificate"]
    assert (a["format_version"], b["format_version"]) == (3, 3)
    assert (a["client"], b["client"]) == ("acme", "globex")
    assert a["subject_key_digest"] != b["subject_key_digest"]
    assert a["scope"]["identifier_kinds"] == ["email"] and a["outcome"] == "no_data_found"
    assert "copies_downloaded" in a and email not in json.dumps(a)

    path = tmp_path / "a.json"
    path.write_text(json.dumps({"certificate": a}))
    identifiers = json.dumps({"email": email.upper()})  # normalised as at intake
    as_a = _cli("certificate", "subject-digest", "--client", "acme", stdin=identifiers)
    assert as_a.exit_code == 0 and as_a.stdout.strip() == a["subject_key_digest"]
    assert email not in as_a.output
    matched = _cli("certificate", "subject-digest", "--certificate", str(path), stdin=identifiers)
    assert matched.exit_code == 0 and "matches" in matched.stdout, matched.output
    # B's client key gives B's digest, never A's: A's certificate does not prove B's erasure.
    as_b = _cli("certificate", "subject-digest", "--client", "globex", "--certificate", str(path), stdin=identifiers)
    assert as_b.exit_code == 1 and "does not match" in as_b.output
    other = _cli("certificate", "subject-digest", "--certificate", str(path), stdin=json.dumps({"email": "x@example.org"}))
    assert other.exit_code == 1


def test_subject_digest_refuses_bad_input_without_echoing_it(database_url, tmp_path):
    secret = "not-an-address-jane"
    result = _cli("certificate", "subject-digest", "--client", "acme", stdin=json.dumps({"email": secret}))
    assert result.exit_code == 2 and secret not in result.output
    assert _cli("certificate", "subject-digest", "--client", "acme", stdin="jane@example.org").exit_code == 2
    assert _cli("certificate", "subject-digest", stdin='{"email": "jane@example.org"}').exit_code == 2
    older = _cli("certificate", "subject-digest", "--certificate", str(FROZEN / "certificate-format-2.json"),
                 stdin='{"email": "jane@example.org"}')
    assert older.exit_code == 2 and "format 3" in older.output


def test_verify_prints_method_kind_and_verdict_next_to_valid(database_url, tmp_path):
    from app.certificates import signing
    from app.certificates.sections import ModelErasure
    from app.db import session_scope
    from tests.certificates.format3_bodies import DATASET, body, model_entry

    frozen = _cli("certificate", "verify", str(FROZEN / "certificate-format-2.json"),
                  "--public-key", str(FROZEN / "signer.pub"))
    assert frozen.exit_code == 0 and "exact (retrain), sanity check pass" in frozen.stdout, frozen.output

    signed = body([ModelErasure(model_entry("sisa"), "exact", DATASET),
                   ModelErasure({**model_entry("gradient_ascent"), "model": "ranker"}, "approximate", DATASET)])
    with session_scope() as session:
        document = signing.sign_body(signed, session)
    path = tmp_path / "v3.json"
    path.write_bytes(signing.document_bytes(document))
    result = _cli("certificate", "verify", str(path), "--public-key", signing.public_key_b64())
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("VALID certificate")
    assert "VALID model churn: exact (sisa), sanity check pass" in lines
    assert "VALID model ranker: approximate (gradient_ascent), verdict pass" in lines


def test_a_certificate_lists_copies_of_the_erased_versions_downloaded_before_the_erasure(client, headers):
    from app.audit import downloads
    from app.certificates import service
    from app.certificates.sections import COPIES_STATEMENT, ModelErasure, Scope
    from app.db import session_scope
    from app.principal import Principal
    from app.requests.models import ErasureRequest
    from tests.certificates.format3_bodies import DATASET, MODEL_ID, model_entry

    rid = uuid.UUID(client.post(URL, json=request_body(identifiers={"email": "c@example.org"}), headers=headers).json()["id"])
    auditor = Principal(key_id="k-auditor", client="acme", name="auditor", scopes=frozenset({"models:read"}))
    with session_scope() as session:
        downloads.record(session, auditor, "model", MODEL_ID, 1, "weights", "w1")  # the version that held them
        downloads.record(session, auditor, "model", MODEL_ID, 2, "weights", "w2")  # the version after: not listed
    with session_scope() as session:
        request = session.get(ErasureRequest, rid)
        facts = service.ErasureFacts(
            request_id=rid, client="acme", jurisdiction="gdpr", source="portal", external_id=None,
            received_at=request.received_at, due_at=request.due_at, completed_at=None, outcome="erased",
            subject_keys={"email": "a" * 64}, scope=Scope(("email",)), datasets=(DATASET,),
            models=(ModelErasure(model_entry("retrain"), "exact", DATASET),))
        body = service.issue(session, facts, "worker:test").body
    section = body["copies_downloaded"]
    assert section["statement"] == COPIES_STATEMENT
    assert [(c["id"], c["version"], c["sha256"], c["downloaded_by_key"]) for c in section["copies"]] == [
        (str(MODEL_ID), 1, "w1", "k-auditor")]


def test_stored_certificates_of_formats_1_and_2_keep_serving_byte_for_byte(client, headers):
    """Certificates are stored bodies, never rebuilt: format 3 changes no byte of an older one."""
    from app.certificates.models import Certificate
    from app.db import session_scope, utcnow

    for name in ("certificate-format-1.json", "certificate-format-2.json"):
        raw = (FROZEN / name).read_bytes()
        document = json.loads(raw)
        rid = client.post(URL, json=request_body(identifiers={"email": f"{uuid.uuid4().hex[:6]}@example.org"}),
                          headers=headers).json()["id"]
        signature = document["signature"]
        with session_scope() as session:
            session.add(Certificate(request_id=uuid.UUID(rid), body=document["certificate"], signature=signature["value"],
                                    key_id=signature["key_id"], public_key=signature["public_key"], issued_at=utcnow()))
        served = client.get(f"{URL}/{rid}/certificate", headers=headers)
        assert served.status_code == 200 and served.content == raw.rstrip(b"\n"), name
