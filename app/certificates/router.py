from __future__ import annotations

import uuid
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.certificates import service, signing
from app.deps import SessionDep, scoped
from app.errors import Conflict
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
def signing_key() -> dict[str, str]:
    """The Ed25519 public key certificates and audit checkpoints are signed with (public; pin it
    for offline checks), and the checkpoints' verifier key in C2SP signed-note form."""
    from app.audit import checkpoints
    from app.audit.notes import verifier_key

    public = signing.public_key_b64()
    return {
        "algorithm": signing.ALGORITHM, "key_id": signing.key_id(public), "public_key": public,
        "checkpoint_origin": checkpoints.origin(),
        "checkpoint_verifier_key": verifier_key(checkpoints.origin(), checkpoints.public_key()),
    }
