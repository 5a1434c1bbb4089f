"""Certificates of remediation (`obliviate.certificate-of-remediation/v1`, docs/remediation.md):
what a remediation request removed, signed with the key that signs certificates of erasure and
chained the same way (the body names the request's audit chain as it stood, and a
`certificate.issued` event records the signed document's digest). They carry the predicate's
text, counts (never identifiers), the dataset versions removed, the models updated and the
checks. Stored as issued in their own table and never rebuilt. Flushes only.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.audit import checkpoints
from app.audit import service as audit_service
from app.audit.chain import format_time
from app.certificates import signing
from app.certificates.models import RemediationCertificate
from app.db import utcnow

TYPE = "obliviate.certificate-of-remediation/v1"


@dataclass(frozen=True)
class RemediationFacts:
    remediation_id: uuid.UUID
    client: str
    kind: str
    reason: str
    selection: str  # predicate | record_ids | source
    predicate: str | None
    created_at: datetime
    completed_at: datetime
    created_by: str
    approved_by: str
    # Counts only: {"records": n, "subjects": n, "dataset_rows": n}.
    counts: Mapping[str, int]
    # Each: name, version_before/after, sha256_before/after, rows_removed, destroyed versions.
    datasets: Sequence[Mapping[str, Any]] = ()
    # Each: model, version_before/after, method, escalations, destroyed versions.
    models: Sequence[Mapping[str, Any]] = ()
    # Per model: the poisoning and bias checks (before / after / retrain).
    checks: Mapping[str, Any] = field(default_factory=dict)


def stream(remediation_id: uuid.UUID | str) -> str:
    return f"remediation:{remediation_id}"


def build_body(facts: RemediationFacts, chain: tuple[str, int, str | None], issued_at: datetime) -> dict[str, Any]:
    name, seq, head = chain
    return {
        "type": TYPE,
        "format_version": signing.FORMAT_VERSION,
        "remediation_id": str(facts.remediation_id),
        "client": facts.client,
        "kind": facts.kind,
        "reason": facts.reason,
        "selection": facts.selection,
        "predicate": facts.predicate,
        "counts": dict(facts.counts),
        "created_at": format_time(facts.created_at),
        "completed_at": format_time(facts.completed_at),
        "created_by": facts.created_by,
        "approved_by": facts.approved_by,
        "datasets": [dict(entry) for entry in facts.datasets],
        "models": [dict(entry) for entry in facts.models],
        "checks": dict(facts.checks),
        "audit_chain": {"stream": name, "seq": seq, "head": head},
        "issued_at": format_time(issued_at),
    }


def issue(session: Session, facts: RemediationFacts, actor: str) -> RemediationCertificate:
    chain = stream(facts.remediation_id)
    seq, head = audit_service.head(session, chain)
    issued_at = utcnow()
    body = build_body(facts, (chain, seq, head), issued_at)
    document = signing.sign_body(body, session)
    certificate = RemediationCertificate(
        remediation_id=facts.remediation_id, body=body, signature=document["signature"]["value"],
        key_id=document["signature"]["key_id"], public_key=document["signature"]["public_key"], issued_at=issued_at,
    )
    session.add(certificate)
    audit_service.append(session, chain, "certificate.issued", actor, {
        "sha256": hashlib.sha256(signing.document_bytes(document)).hexdigest(), "key_id": certificate.key_id,
        "type": TYPE})
    session.flush()
    checkpoints.anchor_after_commit(session)
    return certificate


def get(session: Session, remediation_id: uuid.UUID) -> RemediationCertificate | None:
    return session.get(RemediationCertificate, remediation_id)


def signed_document(certificate: RemediationCertificate) -> dict[str, Any]:
    return {
        "certificate": certificate.body,
        "signature": {"algorithm": signing.ALGORITHM, "key_id": certificate.key_id,
                      "public_key": certificate.public_key, "value": certificate.signature},
    }
