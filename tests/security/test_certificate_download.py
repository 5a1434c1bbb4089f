"""The dashboard's certificate download is byte for byte the API's: the RFC 8785 bytes of the
signed document, whose SHA-256 the `certificate.issued` audit event records. A certificate with
whole-number floats (0.0) tells them apart from the format-1 canonical form, which writes `0.0`
where RFC 8785 writes `0`."""

from __future__ import annotations

import hashlib
import uuid

from tests.dashboard.helpers import new_key, new_request, seed_unlearned, sign_in


def test_dashboard_download_is_the_api_bytes_whose_digest_the_audit_event_records(client):
    plaintext = new_key()
    headers = {"Authorization": f"Bearer {plaintext}"}
    request_id = new_request(client, plaintext)
    seed_unlearned(request_id)
    api = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=headers)
    assert api.status_code == 200
    assert _forms_differ(request_id), "the certificate must be one the two canonical forms tell apart"

    sign_in(client, plaintext)
    dashboard = client.get(f"/admin/requests/{request_id}/certificate.json")
    assert dashboard.status_code == 200

    assert dashboard.content == api.content
    events = client.get(f"/v1/erasure-requests/{request_id}/audit", headers=headers).json()["events"]
    issued = [event for event in events if event["type"] == "certificate.issued"]
    assert len(issued) == 1
    assert issued[0]["data"]["sha256"] == hashlib.sha256(dashboard.content).hexdigest()


def _forms_differ(request_id: str) -> bool:
    from app.audit.chain import canonical_json
    from app.certificates.models import Certificate
    from app.certificates.signing import document_bytes
    from app.db import session_scope
    from app.certificates.service import signed_document

    with session_scope() as session:
        document = signed_document(session.get(Certificate, uuid.UUID(request_id)))
    return canonical_json(document) != document_bytes(document)
