from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.certificates import keys, service, signing, verification
from app.deps import SessionDep, UnitOfWork, scoped
from app.errors import Conflict, Unprocessable
from app.openapi import problem_responses
from app.requests import service as request_service
from app.routing import UnitOfWorkRoute

router = APIRouter(tags=["certificates"], route_class=UnitOfWorkRoute)


class CertificateDocument(BaseModel, title="Certificate"):
    """The signed document, sent as the exact bytes `obliviate certificate verify` checks."""

    model_config = ConfigDict(extra="allow")


class SigningKey(BaseModel):
    algorithm: str
    key_id: str
    public_key: str
    # The audit checkpoints' origin line and their verifier key (C2SP signed-note form).
    checkpoint_origin: str
    checkpoint_verifier_key: str


@router.get(
    "/v1/erasure-requests/{request_id}/certificate", response_class=Response, operation_id="get_erasure_certificate",
    summary="The certificate of erasure of a completed request",
    # 409: the request is not completed yet.
    responses={200: {"model": CertificateDocument}, **problem_responses(409)},
)
def get_certificate(request_id: uuid.UUID, session: SessionDep, principal: scoped("requests:read")) -> Response:
    """The signed certificate of erasure; verify it offline with `obliviate certificate verify`."""
    request = request_service.get_for(session, principal, request_id)
    certificate = service.get(session, request.id)
    if certificate is None:
        raise Conflict(
            f"No certificate yet: the request is '{request.status}'. Certificates are issued on completion.",
            current_status=request.status,
        )
    # Canonical bytes (RFC 8785 from format 2 on); their SHA-256 is in `certificate.issued`.
    return Response(signing.document_bytes(service.signed_document(certificate)), media_type="application/json")


@router.get("/v1/keys/signing", response_model=SigningKey, operation_id="get_signing_key",
            summary="The certificate signing key")
def signing_key(session: SessionDep) -> dict[str, str]:
    """The Ed25519 public key certificates are signed with now (public; pin it for offline checks;
    every key ever used is at GET /v1/certificates/keys), and the audit checkpoints' verifier
    key in C2SP signed-note form."""
    from app.audit import checkpoints
    from app.audit.notes import verifier_key

    public = keys.active_public_key(session)
    return {
        "algorithm": signing.ALGORITHM, "key_id": signing.key_id(public), "public_key": public,
        "checkpoint_origin": checkpoints.origin(),
        "checkpoint_verifier_key": verifier_key(checkpoints.origin(), checkpoints.public_key()),
    }


class PublishedSigningKey(BaseModel):
    key_id: str
    algorithm: Literal["Ed25519"]
    public_key: str
    status: Literal["active", "retired", "revoked"]
    # None: the service key, valid since the first certificate.
    valid_from: datetime | None
    valid_until: datetime | None
    revoked_from: datetime | None
    revocation_reason: str | None


class SigningKeyRing(BaseModel):
    type: Literal["obliviate.certificate-signing-keys/v1"]
    algorithm: Literal["Ed25519"]
    keys: list[PublishedSigningKey]


# A format-3 certificate as served, shortened: the body's other fields are elided.
VERIFY_EXAMPLE = {
    "certificate": {"type": "obliviate.certificate-of-erasure/v1", "format_version": 3,
                    "request_id": "9a4d7e2f-1b8c-4e63-a5f0-3d9b6c2e8f17", "client": "acme", "outcome": "erased",
                    "issued_at": "2026-11-28T09:17:44.602000Z"},
    "signature": {"algorithm": "Ed25519", "key_id": "71f457af274c83da",
                  "public_key": "Zb3l9Q0r2m8Jr3x0m2vJQ0mX1o5l3s9C4kqk0WJm6aI=",
                  "value": "q1m3Zc9p0…(base64 of 64 bytes)"},
}


class CertificateVerification(BaseModel):
    verdict: Literal["valid", "invalid"]
    reason: str
    key_id: str | None
    notes: list[str]


@router.get("/v1/certificates/keys", response_model=SigningKeyRing, operation_id="list_certificate_signing_keys",
            summary="Every certificate signing key with its validity")
def certificate_keys(session: SessionDep) -> dict[str, Any]:
    """Every Ed25519 key that ever signed certificates, with its validity period and any
    revocation: the file an auditor keeps (`obliviate signing-key export` writes the same) and
    passes to `obliviate certificate verify --public-key`."""
    return keys.ring_document(keys.ring(session, create_service_key=True))


@router.post(
    "/v1/certificates/verify", response_model=CertificateVerification, operation_id="verify_certificate",
    summary="Verify a certificate of erasure against this service's keys",
    # 400 and 413: a bad Content-Length or a body over max_body_bytes; 422: not JSON at all.
    responses=problem_responses(400, 413, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object"}, "example": VERIFY_EXAMPLE}}}},
)
async def verify_certificate(request: Request, _principal: scoped("requests:read")) -> dict[str, Any]:
    """Send the certificate's bytes as served; the verdict is that of `obliviate certificate
    verify` with this service's key file, so a certificate signed by an older key still verifies."""
    raw = await request.body()
    try:
        verification.parse(raw)
    except (UnicodeDecodeError, ValueError):
        raise Unprocessable("The body is not JSON (malformed, a key given twice, or NaN): send the certificate's "
                            "bytes as served.") from None
    unit = UnitOfWork()
    result = await unit.run(lambda: verification.verify_bytes(raw, keys.ring(unit.session, create_service_key=True)))
    models = verification.model_summaries(result.certificate) if result.certificate is not None else ()
    return {"verdict": result.verdict.value, "reason": result.reason, "key_id": result.key_id,
            "notes": list(result.notes),
            "models": [{"model": m.model, "method": m.method, "method_kind": m.method_kind, "verdict": m.verdict}
                       for m in models]}
