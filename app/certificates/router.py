from __future__ import annotations

import uuid
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.audit.chain import canonical_json
from app.certificates import signing
from app.certificates.models import Certificate
from app.deps import SessionDep, scoped
from app.errors import Conflict
from app.openapi import problem_responses
from app.requests import service as request_service
from app.routing import UnitOfWorkRoute
from app.unlearning.completion import signed_document

router = APIRouter(tags=["certificates"], route_class=UnitOfWorkRoute)


class CertificateDocument(BaseModel, title="Certificate"):
    """The signed document, sent as the exact bytes `obliviate certificate verify` checks."""

    model_config = ConfigDict(extra="allow")


class SigningKey(BaseModel):
    algorithm: str
    key_id: str
    public_key: str


@router.get(
    "/v1/erasure-requests/{request_id}/certificate", response_class=Response, operation_id="get_erasure_certificate",
    summary="The certificate of erasure of a completed request",
    # 409: the request is not completed yet.
    responses={200: {"model": CertificateDocument}, **problem_responses(409)},
)
def get_certificate(request_id: uuid.UUID, session: SessionDep, principal: scoped("requests:read")) -> Response:
    """The signed certificate of erasure; verify it offline with `obliviate certificate verify`."""
    request = request_service.get_for(session, principal, request_id)
    certificate = session.get(Certificate, request.id)
    if certificate is None:
        raise Conflict(
            f"No certificate yet: the request is '{request.status}'. Certificates are issued on completion.",
            current_status=request.status,
        )
    # Canonical bytes (sorted keys, no spaces): the exact bytes `certificate verify` checks.
    return Response(canonical_json(signed_document(certificate)), media_type="application/json")


@router.get("/v1/keys/signing", response_model=SigningKey, operation_id="get_signing_key",
            summary="The certificate signing key")
def signing_key() -> dict[str, str]:
    """The Ed25519 public key certificates are signed with (public; pin it for offline checks)."""
    public = signing.public_key_b64()
    return {"algorithm": signing.ALGORITHM, "key_id": signing.key_id(public), "public_key": public}
