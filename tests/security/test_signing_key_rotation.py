"""The certificate signing key can be rotated and revoked (issue 20, item 18): every key is
published with its validity period (`GET /v1/certificates/keys`, `obliviate signing-key export`),
certificates signed by an older key keep verifying against it, and a key revoked from a time
invalidates what it signed from then on while earlier certificates stay valid with a note."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import SERVICES
from tests.security.anchoring_helpers import URL, certified_request, cli


@pytest.fixture
def key_dir(settings_env, tmp_path):
    settings_env(SIGNING_KEY_DIR=str(tmp_path / "signing_keys"))
    return tmp_path / "signing_keys"


def _certificate(client, headers) -> dict:
    rid = certified_request(client, headers)
    response = client.get(f"{URL}/{rid}/certificate", headers=headers)
    assert response.status_code == 200
    return response.json()


def _write(tmp_path, value: dict | str) -> str:
    path = tmp_path / f"file-{uuid.uuid4().hex[:6]}.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def _verify(tmp_path, document: dict, key_file: str):
    return cli("certificate", "verify", _write(tmp_path, document), "--public-key", key_file)


def _api(client, headers, document: dict) -> dict:
    response = client.post("/v1/certificates/verify", content=json.dumps(document), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _signed_by_service_key(document: dict, signed_at: datetime) -> dict:
    """What someone holding the first (service) key can sign: any body, any time."""
    from app import signing
    from app.certificates.signing import canonical_bytes

    forged = copy.deepcopy(document)
    forged["certificate"].update(request_id=str(uuid.uuid4()), issued_at=signed_at.isoformat().replace("+00:00", "Z"))
    forged["signature"]["value"] = base64.b64encode(
        signing.private_key().sign(canonical_bytes(forged["certificate"], 2))).decode()
    return forged


def test_rotation_publishes_every_key_and_old_certificates_keep_verifying(client, headers, tmp_path, key_dir):
    before = _certificate(client, headers)
    result = cli("signing-key", "rotate")
    assert result.exit_code == 0, result.output
    after = _certificate(client, headers)
    old_id, new_id = before["signature"]["key_id"], after["signature"]["key_id"]
    assert old_id != new_id
    assert (key_dir / f"{new_id}.pem").is_file()
    assert client.get("/v1/keys/signing").json()["key_id"] == new_id

    ring = client.get("/v1/certificates/keys").json()
    by_id = {key["key_id"]: key for key in ring["keys"]}
    assert set(by_id) == {old_id, new_id}
    assert by_id[old_id]["status"] == "retired" and by_id[new_id]["status"] == "active"
    assert by_id[old_id]["valid_until"] == by_id[new_id]["valid_from"] is not None
    assert by_id[new_id]["valid_until"] is None and by_id[old_id]["revoked_from"] is None

    exported = tmp_path / "signing-keys.json"
    assert cli("signing-key", "export", "--output", str(exported)).exit_code == 0
    assert json.loads(exported.read_text()) == ring
    for document in (before, after):
        result = _verify(tmp_path, document, str(exported))
        assert result.exit_code == 0, result.output
        assert _api(client, headers, document)["verdict"] == "valid"
    if not SERVICES:  # the embedded layout trusts the service's own keys, the retired one included
        for document in (before, after):
            assert cli("certificate", "verify", _write(tmp_path, document)).exit_code == 0
    # Each key verifies only what it signed.
    assert _verify(tmp_path, before, by_id[old_id]["public_key"]).exit_code == 0
    assert _verify(tmp_path, after, by_id[old_id]["public_key"]).exit_code == 1

    from app.audit import service as audit_service
    from app.integrity.service import verify_log
    from app.db import session_scope

    with session_scope() as session:
        report = verify_log(session)
        events = audit_service.events(session, "signing-keys")
    assert not [p for p in report.problems if "certificate" in p], report.problems
    assert [(e.type, e.data["key_id"]) for e in events] == [("signing_key.rotated", new_id)]


def test_a_revoked_key_invalidates_only_what_it_signed_from_then_on(client, headers, tmp_path, key_dir):
    before = _certificate(client, headers)
    old_id = before["signature"]["key_id"]
    assert cli("signing-key", "rotate").exit_code == 0
    revoked_from = datetime.now(timezone.utc) + timedelta(seconds=1)
    result = cli("signing-key", "revoke", old_id, "--from", revoked_from.isoformat(), "--reason", "key file leaked")
    assert result.exit_code == 0, result.output
    key_file = _write(tmp_path, client.get("/v1/certificates/keys").json())

    result = _verify(tmp_path, before, key_file)
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    verdict = _api(client, headers, before)
    assert verdict["verdict"] == "valid" and "revoked" in verdict["notes"][0]

    forged = _signed_by_service_key(before, revoked_from + timedelta(hours=1))
    result = _verify(tmp_path, forged, key_file)
    assert result.exit_code == 1 and "revoked" in result.output, result.output
    assert _api(client, headers, forged)["verdict"] == "invalid"

    # A revocation moves earlier, never later: from before the first certificate, it goes too.
    later = cli("signing-key", "revoke", old_id, "--from", (revoked_from + timedelta(days=1)).isoformat())
    assert later.exit_code == 1
    earlier = datetime.fromisoformat(before["certificate"]["issued_at"]) - timedelta(seconds=1)
    assert cli("signing-key", "revoke", old_id, "--from", earlier.isoformat()).exit_code == 0
    assert _api(client, headers, before)["verdict"] == "invalid"


def test_a_retired_key_cannot_sign_after_its_retirement(client, headers, tmp_path, key_dir):
    before = _certificate(client, headers)
    assert cli("signing-key", "rotate").exit_code == 0
    key_file = _write(tmp_path, client.get("/v1/certificates/keys").json())
    forged = _signed_by_service_key(before, datetime.now(timezone.utc) + timedelta(hours=1))
    result = _verify(tmp_path, forged, key_file)
    assert result.exit_code == 1 and "retired" in result.output, result.output


def test_revocation_refuses_the_active_key_unknown_keys_and_bad_input(client, headers, key_dir):
    active = client.get("/v1/keys/signing").json()["key_id"]
    now = datetime.now(timezone.utc).isoformat()
    assert cli("signing-key", "revoke", active, "--from", now).exit_code == 1  # rotate first
    assert cli("signing-key", "revoke", "0123456789abcdef", "--from", now).exit_code == 1
    assert cli("signing-key", "rotate").exit_code == 0
    assert cli("signing-key", "revoke", active, "--from", "2026-12-01T00:00:00").exit_code == 2  # no zone
    leaked = cli("signing-key", "revoke", active, "--from", now, "--reason", "leaked by jane@example.org")
    assert leaked.exit_code == 1 and "jane" not in leaked.output
    assert client.get("/v1/certificates/keys").json()["keys"][0]["revoked_from"] is None


def test_a_damaged_key_file_is_a_usage_error(client, headers, tmp_path):
    document = _certificate(client, headers)
    ring = client.get("/v1/certificates/keys").json()
    ring["keys"][0]["key_id"] = "0000000000000000"  # no longer names its public key
    result = _verify(tmp_path, document, _write(tmp_path, ring))
    assert result.exit_code == 2, result.output
