"""Certificates of erasure: the body built from what the request and its jobs did, signed,
stored and announced in the request's audit chain; and the stored certificate as the signed
document that is served and verified.

A certificate is stored as issued and never rebuilt: every later reading (the API, the
dashboard, `audit verify`) serves `signed_document` of the stored row. A new format adds its
fields to `CertificateInput` and to `build_body`, the one place a body is made, and raises
`signing.FORMAT_VERSION`. Format 3 names the client and digests the subject for it alone
(app/certificates/subject.py); its scope, models and copies are shaped in
app/certificates/sections.py. Flushes only; the caller commits.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.audit import checkpoints, downloads
from app.audit import service as audit_service
from app.audit.chain import format_time
from app.certificates import signing, subject
from app.certificates.models import Certificate
from app.certificates.sections import (
    Checked, Entry, ModelErasure, Scope, copies_section, erased_versions, model_section,
)
from app.db import utcnow

__all__ = [
    "CertificateInput", "ChainLink", "Checked", "Entry", "ErasureFacts", "ModelErasure", "Scope", "build_body",
    "get", "issue", "signed_document",
]


@dataclass(frozen=True)
class ErasureFacts:
    """What the request's owner and its finished jobs tell the certificate."""

    request_id: uuid.UUID
    client: str
    jurisdiction: str
    source: str
    external_id: str | None
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    outcome: str | None
    # The request's subject keys (kind → key): the body carries only their digest for `client`.
    subject_keys: Mapping[str, str]
    scope: Scope
    datasets: Sequence[Entry] = ()
    models: Sequence[ModelErasure] = ()


@dataclass(frozen=True)
class ChainLink:
    """The request's audit chain as it stood when the certificate was issued."""

    stream: str
    seq: int
    head: str | None


@dataclass(frozen=True)
class CertificateInput:
    facts: ErasureFacts
    chain: ChainLink
    issued_at: datetime
    # Downloads of the erased versions made before the erasure (app/audit/downloads.py).
    copies: Sequence[downloads.DownloadedCopy] = ()


def build_body(given: CertificateInput) -> dict[str, Any]:
    """The certificate's body, in the current format (`signing.FORMAT_VERSION`)."""
    facts = given.facts
    return {
        "type": "obliviate.certificate-of-erasure/v1",
        "format_version": signing.FORMAT_VERSION,
        "request_id": str(facts.request_id),
        "client": facts.client,
        "jurisdiction": facts.jurisdiction,
        "source": facts.source,
        "external_id": facts.external_id,
        "received_at": format_time(facts.received_at),
        "due_at": format_time(facts.due_at),
        "completed_at": format_time(facts.completed_at or given.issued_at),
        "outcome": facts.outcome,
        "subject_key_digest": subject.client_digest(facts.client, facts.subject_keys),
        "subject_key_digest_scheme": subject.SCHEME,
        "scope": facts.scope.to_json(),
        "datasets": [dict(entry) for entry in facts.datasets],
        "models": [model_section(model, facts.request_id) for model in facts.models],
        "copies_downloaded": copies_section(given.copies),
        # The link before this certificate's own `certificate.issued` event, which cannot be
        # named here (it records this document's digest): `audit verify --head` accepts it.
        "audit_chain": {"stream": given.chain.stream, "seq": given.chain.seq, "head": given.chain.head},
        "issued_at": format_time(given.issued_at),
    }


def issue(session: Session, facts: ErasureFacts, actor: str) -> Certificate:
    """Sign and store the request's certificate, record its digest in the request's chain and
    anchor that event in the next checkpoint."""
    stream = audit_service.request_stream(facts.request_id)
    seq, head = audit_service.head(session, stream)
    issued_at = utcnow()
    model_versions, dataset_versions = erased_versions(facts.datasets, facts.models)
    copies = downloads.copies(session, model_versions=model_versions, dataset_versions=dataset_versions,
                              before=facts.completed_at or issued_at)
    body = build_body(CertificateInput(facts=facts, chain=ChainLink(stream, seq, head), issued_at=issued_at,
                                       copies=copies))
    document = signing.sign_body(body, session)
    certificate = Certificate(
        request_id=facts.request_id, body=body, signature=document["signature"]["value"],
        key_id=document["signature"]["key_id"], public_key=document["signature"]["public_key"], issued_at=issued_at,
    )
    session.add(certificate)
    audit_service.append(
        session, stream, "certificate.issued", actor,
        {"sha256": hashlib.sha256(signing.document_bytes(document)).hexdigest(), "key_id": certificate.key_id},
    )
    session.flush()
    # Anchor the certificate: a checkpoint over its event, signed right after this commit.
    checkpoints.anchor_after_commit(session)
    return certificate


def get(session: Session, request_id: uuid.UUID) -> Certificate | None:
    return session.get(Certificate, request_id)


def signed_document(certificate: Certificate) -> dict[str, Any]:
    """The stored certificate as the signed document: what is served, hashed and verified."""
    return {
        "certificate": certificate.body,
        "signature": {
            "algorithm": signing.ALGORITHM, "key_id": certificate.key_id, "public_key": certificate.public_key,
            "value": certificate.signature,
        },
    }
