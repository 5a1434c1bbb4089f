"""`obliviate certificate verify` trusts only keys it already holds (issue 20, item 6): a
certificate re-signed by someone else's key is never VALID, whatever `key_id` it copies; without a
trusted key the answer is "signature not checked" (exit 3); a field outside the signed body makes
it INVALID. Certificates of formats 1 and 2, frozen as issued, keep verifying byte for byte."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from pathlib import Path

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import SERVICES
from tests.security.anchoring_helpers import URL, certified_request, cli

FROZEN = Path(__file__).parent / "frozen_certificates"
# The files as issued: regenerating or re-formatting them would hide a format change.
FROZEN_SHA256 = {
    "certificate-format-1.json": "49ee3750e29e49638868212ae5a24e1c1933907ab25c8eb423ea86454579fe81",
    "certificate-format-2.json": "fd7339af9fb375173f658d5694e2072fa60e00c358ef94d1c024fd0ec8abb55a",
}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _public(key: Ed25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes_raw())


def _resigned(document: dict, key: Ed25519PrivateKey, key_id: str | None = None) -> dict:
    """Another request's id, signed by `key`: what a forger can make."""
    forged = copy.deepcopy(document)
    forged["certificate"]["request_id"] = str(uuid.uuid4())
    public = _public(key)
    forged["signature"] = {
        "algorithm": "Ed25519",
        "key_id": key_id or hashlib.sha256(key.public_key().public_bytes_raw()).hexdigest()[:16],
        "public_key": public, "value": _b64(key.sign(rfc8785.dumps(forged["certificate"]))),
    }
    return forged


def _verify(tmp_path, document: dict | bytes, *args: str):
    path = tmp_path / f"certificate-{uuid.uuid4().hex[:6]}.json"
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    return cli("certificate", "verify", str(path), *args)


def _served(client, headers) -> dict:
    rid = certified_request(client, headers)
    return client.get(f"{URL}/{rid}/certificate", headers=headers).json()


def _api_verdict(client, headers, document: dict) -> dict:
    response = client.post("/v1/certificates/verify", content=json.dumps(document), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_forgery_that_copies_the_services_key_id_is_invalid(client, headers, tmp_path):
    document = _served(client, headers)
    service_key = client.get("/v1/keys/signing").json()["public_key"]
    forged = _resigned(document, Ed25519PrivateKey.generate(), key_id=document["signature"]["key_id"])

    for args in ((), ("--public-key", service_key)):
        result = _verify(tmp_path, forged, *args)
        assert result.exit_code == 1, result.output
        assert "INVALID" in result.output and "VALID certificate" not in result.output
    assert _api_verdict(client, headers, forged)["verdict"] == "invalid"


def test_a_certificate_signed_by_another_key_is_never_valid(client, headers, tmp_path):
    document = _served(client, headers)
    service_key = client.get("/v1/keys/signing").json()["public_key"]
    forged = _resigned(document, Ed25519PrivateKey.generate())  # consistent key_id, foreign key

    assert _verify(tmp_path, forged, "--public-key", service_key).exit_code == 1
    assert _api_verdict(client, headers, forged)["verdict"] == "invalid"
    # Without --public-key: the embedded layout trusts the service's keys (INVALID); the services
    # pass is not that layout, so it has no key of its own and says so (exit 3).
    result = _verify(tmp_path, forged)
    assert result.exit_code == (3 if SERVICES else 1), result.output
    assert "VALID certificate" not in result.output


def test_without_a_trusted_key_the_signature_is_not_checked(client, headers, tmp_path, settings_env):
    document = _served(client, headers)
    forged = _resigned(document, Ed25519PrivateKey.generate())
    tampered = copy.deepcopy(document)
    tampered["certificate"]["outcome"] = "erased" if document["certificate"]["outcome"] != "erased" else "no_data_found"
    # A machine with no service of its own: an auditor's.
    settings_env(DATA_DIR=str(tmp_path / "auditor"), DATABASE_URL=f"sqlite:///{tmp_path / 'auditor' / 'absent.db'}")

    for unchecked in (document, forged):
        result = _verify(tmp_path, unchecked)
        assert result.exit_code == 3, result.output
        assert "SIGNATURE NOT CHECKED" in result.output and "VALID certificate" not in result.output
    assert not (tmp_path / "auditor" / "signing_key.pem").exists()  # a verifier never makes a key
    result = _verify(tmp_path, tampered)
    assert result.exit_code == 1 and "INVALID" in result.output


def test_the_embedded_layout_trusts_the_services_own_key(client, headers, tmp_path):
    document = _served(client, headers)
    result = _verify(tmp_path, document)
    if SERVICES:  # not the embedded layout: this machine holds no key of the service's
        assert result.exit_code == 3 and "VALID certificate" not in result.output, result.output
    else:
        assert result.exit_code == 0 and "VALID certificate" in result.output, result.output


def test_a_field_outside_the_signed_body_is_invalid(client, headers, tmp_path):
    document = _served(client, headers)
    service_key = client.get("/v1/keys/signing").json()["public_key"]
    assert _verify(tmp_path, document, "--public-key", service_key).exit_code == 0

    beside_body = {**document, "note": "superseded: see the corrected certificate"}
    beside_signature = copy.deepcopy(document)
    beside_signature["signature"]["note"] = "key rotated, still valid"
    for altered in (beside_body, beside_signature):
        result = _verify(tmp_path, altered, "--public-key", service_key)
        assert result.exit_code == 1, result.output
        assert "outside the signed body" in result.output
        assert _api_verdict(client, headers, altered)["verdict"] == "invalid"


def test_frozen_format_1_and_2_certificates_verify_unchanged(tmp_path, database_url):
    from app.certificates import signing

    signer = FROZEN / "signer.pub"
    wrong = _public(Ed25519PrivateKey.generate())
    for name, digest in FROZEN_SHA256.items():
        raw = (FROZEN / name).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == digest
        document = json.loads(raw)
        assert document["certificate"].get("format_version", 1) == (1 if "format-1" in name else 2)
        assert signing.document_bytes(document) == raw  # served bytes, as issued

        for trusted in (str(signer), signer.read_text().strip()):
            result = _verify(tmp_path, raw, "--public-key", trusted)
            assert result.exit_code == 0, (name, result.output)
            assert "VALID certificate" in result.output
        result = _verify(tmp_path, raw, "--public-key", wrong)
        assert result.exit_code == 1 and "INVALID" in result.output, (name, result.output)
        # Format 1 is checked byte for byte: the same values, re-formatted, are not what was issued.
        reformatted = _verify(tmp_path, json.dumps(document, indent=2).encode(), "--public-key", str(signer))
        assert reformatted.exit_code == (1 if "format-1" in name else 0), (name, reformatted.output)


def test_the_api_answers_a_body_that_is_not_json_with_a_problem(client, headers):
    for body in (b"{not json", b'{"certificate": 1, "certificate": 2}', b"\xff\xfe", b'{"x": NaN}'):
        response = client.post("/v1/certificates/verify", content=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.post("/v1/certificates/verify", content=b"{}").status_code == 401
