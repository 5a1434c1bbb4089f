from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import ValidationError

from app.config import get_settings
from app.deps import SessionDep, scoped
from app.errors import Unprocessable, sanitised_validation_errors
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.openapi import problem_responses
from app.remediation import id_file, service
from app.remediation.schemas import (
    DenyRemediation,
    RemediationCreate,
    RemediationFromFile,
    RemediationOut,
    RemediationPage,
)
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/remediation-requests", tags=["remediation requests"], route_class=UnitOfWorkRoute)

Reviewer = scoped("requests:review")
TRANSITION = problem_responses(409)


@router.post(
    "", status_code=201, response_model=RemediationOut, operation_id="create_remediation_request",
    summary="Create a remediation request (answers its dry run)", dependencies=[IdempotencyKeyHeader],
    responses=problem_responses(404),  # the dataset is not the caller's
)
def create_remediation(payload: RemediationCreate, request: Request, session: SessionDep, principal: Reviewer) -> Any:
    """Select a slice of a dataset by predicate, record ids or source value. The answer carries
    the dry run: records and subjects matched per dataset version, the models affected, the
    method each would use and the estimated cost. A selection that matches nothing, or more
    than OBLIVIATE_MAX_REMEDIATION_FRACTION without `override_fraction`, answers 422 with the
    figures and stores nothing."""

    def handler():
        created = service.create(session, principal, payload)
        return 201, service.to_out(created).model_dump(mode="json"), {"Location": f"/v1/remediation-requests/{created.id}"}

    return idempotency.run(request, session, principal, "create-remediation", lambda: payload.model_dump(mode="json"),
                           handler)


FILE_METADATA_EXAMPLE = ('{"kind": "licence", "reason": "Vendor C withdrew the licence of these records.", '
                         '"dataset_id": "0b7f0d9e-0000-4000-8000-000000000000"}')


@router.post(
    "/upload", status_code=201, response_model=RemediationOut, operation_id="create_remediation_request_from_file",
    summary="Create a remediation request from a file of record ids (answers its dry run)",
    dependencies=[IdempotencyKeyHeader],
    # 404: the dataset is not the caller's; 413: the file is over OBLIVIATE_MAX_RECORD_IDS_BYTES.
    responses=problem_responses(404, 413),
)
def create_remediation_from_file(
    request: Request, session: SessionDep, principal: Reviewer,
    metadata: Annotated[str, Form(max_length=100_000, description=(
        "JSON: the fields of POST /v1/remediation-requests without predicate, record_ids or source."),
        examples=[FILE_METADATA_EXAMPLE])],
    record_ids: Annotated[UploadFile, File(description=(
        "The slice: one decimal record id per line, or CSV (UTF-8) with a record_id column. At most "
        "OBLIVIATE_MAX_RECORD_IDS ids and OBLIVIATE_MAX_RECORD_IDS_BYTES bytes; every id once, and every id a "
        "record of the dataset's current version."))],
) -> Any:
    """The same request and dry run as POST /v1/remediation-requests, its slice the records named
    by a file. A file that is empty, binary, not UTF-8, of neither format, repeats an id, names an
    id the dataset's current version does not hold, or holds too many answers 422 (413: too big),
    naming line numbers and counts, never ids; nothing is stored."""
    meta = _file_metadata(metadata)
    settings = get_settings()
    ids = id_file.read(record_ids.file, max_bytes=settings.max_record_ids_bytes, max_ids=settings.max_record_ids)

    def handler():
        created = service.create(session, principal, meta, ids)
        return 201, service.to_out(created).model_dump(mode="json"), {"Location": f"/v1/remediation-requests/{created.id}"}

    # The file counts by its digest: a retry must send the same file to be a replay.
    payload = {"metadata": meta.model_dump(mode="json"), "record_ids_sha256": ids.sha256}
    return idempotency.run(request, session, principal, "create-remediation-from-file", payload, handler)


def _file_metadata(metadata: str) -> RemediationFromFile:
    try:
        return RemediationFromFile.model_validate_json(metadata)
    except ValidationError as exc:
        errors = sanitised_validation_errors(exc.errors(include_input=False, include_url=False))
        raise Unprocessable("The metadata field is not valid.", errors=errors) from None


@router.get("", response_model=RemediationPage, operation_id="list_remediation_requests",
            summary="List remediation requests", responses=problem_responses(400))
def list_remediations(
    session: SessionDep, principal: Reviewer,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    rows, next_cursor = service.list_for(session, principal, limit=limit, cursor=cursor, status=status)
    return RemediationPage(items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{request_id}", response_model=RemediationOut, operation_id="get_remediation_request",
            summary="Get a remediation request")
def get_remediation(request_id: uuid.UUID, session: SessionDep, principal: Reviewer) -> Any:
    return service.to_out(service.get_for(session, principal, request_id))


@router.get("/{request_id}/audit", operation_id="get_remediation_audit", summary="A remediation request's history")
def get_remediation_audit(request_id: uuid.UUID, session: SessionDep, principal: Reviewer) -> Any:
    request = service.get_for(session, principal, request_id)
    return {"stream": service.stream(request.id), "events": service.trail(session, request)}


@router.post("/{request_id}/approve", response_model=RemediationOut, responses=TRANSITION,
             operation_id="approve_remediation_request", summary="Approve a remediation request (another key)")
def approve_remediation(request_id: uuid.UUID, session: SessionDep, principal: Reviewer) -> Any:
    """Four eyes: the key that created the request cannot approve it (403)."""
    return service.to_out(service.approve(session, principal, request_id))


@router.post("/{request_id}/deny", response_model=RemediationOut, responses=TRANSITION,
             operation_id="deny_remediation_request", summary="Deny a remediation request (reason required)")
def deny_remediation(request_id: uuid.UUID, body: DenyRemediation, session: SessionDep, principal: Reviewer) -> Any:
    return service.to_out(service.deny(session, principal, request_id, body.reason))


@router.get("/{request_id}/certificate", operation_id="get_remediation_certificate",
            summary="The signed certificate of remediation")
def get_remediation_certificate(request_id: uuid.UUID, session: SessionDep, principal: Reviewer) -> Any:
    return service.get_certificate(session, principal, request_id)
