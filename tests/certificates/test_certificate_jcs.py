"""Certificates survive re-formatting: format 2 on is signed over its RFC 8785 (JCS) canonical form,
so whitespace and key order do not matter and every changed value does; format 1 certificates
(no format_version, issued before) keep verifying byte for byte."""

from __future__ import annotations

import base64
import hashlib
import json

import rfc8785

from tests.security.anchoring_helpers import URL, certified_request, cli


def _reversed_keys(value):
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def _served(client, headers):
    rid = certified_request(client, headers)
    response = client.get(f"{URL}/{rid}/certificate", headers=headers)
    assert response.status_code == 200
    return rid, response


def _verify(tmp_path, content: str | bytes, *args: str):
    """Against the service's key, given explicitly: only the embedded layout trusts it unasked
    (tests/security/test_certificate_trust.py)."""
    from app.signing import public_key_b64

    path = tmp_path / "certificate.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return cli("certificate", "verify", str(path), *(args or ("--public-key", public_key_b64())))


def test_a_pretty_printed_certificate_verifies(client, headers, tmp_path):
    _rid, response = _served(client, headers)
    document = response.json()
    assert document["certificate"]["format_version"] == 3
    public_key = client.get("/v1/keys/signing").json()["public_key"]

    assert _verify(tmp_path, response.content, "--public-key", public_key).exit_code == 0
    pretty = json.dumps(document, indent=2)  # what `jq .` does
    result = _verify(tmp_path, pretty + "\n", "--public-key", public_key)
    assert result.exit_code == 0, result.output
    shuffled = json.dumps(_reversed_keys(document), indent="\t", separators=(" ,", " : "))
    assert _verify(tmp_path, shuffled).exit_code == 0


def _other_last_digit(text: str) -> str:
    return text[:-1] + ("1" if text[-1] == "0" else "0")


def test_any_changed_value_fails(client, headers, tmp_path):
    _rid, response = _served(client, headers)
    document = response.json()
    # The same values, re-formatted, verify; each change below is the only difference.
    assert _verify(tmp_path, json.dumps(document, indent=2)).exit_code == 0
    changes = [
        lambda d: d["certificate"].update(outcome="erased"),
        # Another last hex digit (a uuid ends in "0" one time in 16, where "0" changed nothing).
        lambda d: d["certificate"].update(request_id=_other_last_digit(d["certificate"]["request_id"])),
        lambda d: d["certificate"]["audit_chain"].update(seq=d["certificate"]["audit_chain"]["seq"] + 1),
        lambda d: d["certificate"].update(extra=None),
        lambda d: d["certificate"].update(format_version=1),
        lambda d: d["certificate"].pop("datasets"),
    ]
    for change in changes:
        altered = json.loads(response.content)
        change(altered)
        assert altered != document
        result = _verify(tmp_path, json.dumps(altered, indent=2))
        assert result.exit_code == 1, (altered, result.output)
        assert "INVALID" in result.output
    # A key given twice could show a reader one value and the verifier another: refused.
    twice = response.text.replace('"outcome":', '"outcome":"erased","outcome":', 1)
    assert _verify(tmp_path, twice).exit_code == 1


def test_served_bytes_are_rfc8785_and_the_audit_event_records_their_digest(client, headers):
    rid, response = _served(client, headers)
    assert response.json()["certificate"]["format_version"] == 3
    assert response.content == rfc8785.dumps(response.json())
    events = client.get(f"{URL}/{rid}/audit", headers=headers).json()["events"]
    issued = [e for e in events if e["type"] == "certificate.issued"]
    assert issued and issued[0]["data"]["sha256"] == hashlib.sha256(response.content).hexdigest()


def test_format_1_certificates_keep_verifying(database_url, tmp_path):
    from app.audit.chain import canonical_json
    from app.certificates import signing

    body = {"type": "obliviate.certificate-of-erasure/v1", "request_id": "00000000-0000-0000-0000-000000000001",
            "outcome": "erased", "models": [{"verification": {"mia_auc": 0.5123}}]}
    public = signing.public_key_b64()
    document = {"certificate": body, "signature": {
        "algorithm": "Ed25519", "key_id": signing.key_id(public), "public_key": public,
        "value": base64.b64encode(signing.private_key().sign(canonical_json(body))).decode(),
    }}
    issued = canonical_json(document)
    assert signing.document_bytes(document) == issued
    assert _verify(tmp_path, issued + b"\n").exit_code == 0
    forged = json.loads(issued)
    forged["certificate"]["outcome"] = "no_data_found"
    assert _verify(tmp_path, canonical_json(forged)).exit_code == 1
