from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.deps import SessionDep, scoped
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.openapi import problem_responses
from app.remediation import service
from app.remediation.schemas import DenyRemediation, RemediationCreate, RemediationOut, RemediationPage
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
