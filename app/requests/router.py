from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from app import metrics
from app.audit import service as audit_service
from app.config import get_settings
from app.db import read_session
from app.deps import SessionDep, UnitOfWork, any_scope, in_intake_thread, scoped
from app.errors import PayloadTooLarge
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.identities import service as identity_service
from app.jobs import service as job_service
from app.openapi import problem_responses
from app.requests import fast_intake, service
from app.requests.schemas import (
    ApproveBody, AuditEventOut, AuditTrail, BatchResponse, DenyBody, IdentityVerification, ErasureRequestCreate, ErasureRequestOut,
    ErasureRequestPage, ExtendBody, Jurisdiction, OptionalReasonBody, ReasonBody, SearchedOut, Source, Status,
)
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/erasure-requests", tags=["erasure requests"], route_class=UnitOfWorkRoute)

Writer = scoped("requests:write")
Reader = scoped("requests:read")
Reviewer = scoped("requests:review")
VerificationWriter = any_scope("requests:write", "requests:review")
# Beyond what app/openapi.py adds for every route: an external_id being stored by a concurrent
# request (409); a transition the current status does not allow (409); a bad cursor (400).
CONCURRENT_EXTERNAL_ID = problem_responses(409)
TRANSITION = problem_responses(409)


@router.post(
    "", status_code=201, response_model=ErasureRequestOut, operation_id="create_erasure_request",
    summary="Create an erasure request", dependencies=[IdempotencyKeyHeader],
    responses={200: {"model": ErasureRequestOut, "description": "An existing request with this external_id"},
               **CONCURRENT_EXTERNAL_ID},
)
async def create_request(payload: ErasureRequestCreate, request: Request, principal: Writer) -> Any:
    started = time.perf_counter()
    kinds = set(payload.subject.identifiers)
    if not identity_service.seen_known(principal.client, kinds):
        known = await in_intake_thread(lambda: _known_kinds(principal))
        identity_service.remember_known(principal.client, known)
        identity_service.refuse_unknown(kinds, known)
    # PostgreSQL: one autocommitted statement on the event loop (app/requests/fast_intake.py).
    response = await fast_intake.create_one(principal, payload, request.headers.get("idempotency-key"))
    if response is None:
        response = await _create_in_unit_of_work(payload, request, principal)
    metrics.INTAKE_LATENCY.observe(time.perf_counter() - started)
    return response


def _known_kinds(principal) -> list[str]:
    """The client's known identifier kinds, read outside the unit of work (on SQLite it holds the
    write lock from its first statement)."""
    session = read_session()
    try:
        return identity_service.known_kinds(session, principal.client)
    finally:
        session.close()


async def _create_in_unit_of_work(payload: ErasureRequestCreate, request: Request, principal) -> JSONResponse:
    unit = UnitOfWork()
    session = unit.session

    def handler():
        created_request, created = service.create(session, principal, payload)
        body = service.to_out(created_request).model_dump(mode="json")
        return (201 if created else 200), body, fast_intake.location_of(created_request.id)

    # The body's JSON form is only needed to fingerprint an Idempotency-Key.
    return await unit.run(lambda: idempotency.run(
        request, session, principal, fast_intake.CREATE_ROUTE, lambda: payload.model_dump(mode="json"), handler,
    ))


@router.post(
    "/batch", response_model=BatchResponse, operation_id="create_erasure_requests_batch",
    summary="Create up to 1,000 erasure requests", dependencies=[IdempotencyKeyHeader],
)
async def create_batch(
    request: Request, principal: Writer,
    # Items are checked one by one below, so one malformed item (even a non-object) is reported
    # in its place instead of rejecting the whole batch.
    items: Annotated[list[Any], Body(
        description="Up to 1,000 erasure requests, as for POST /v1/erasure-requests.",
        examples=[[ErasureRequestCreate.model_json_schema()["examples"][0]]],
    )],
) -> Any:
    limit = get_settings().max_batch_items
    if len(items) > limit:
        raise PayloadTooLarge(f"A batch holds at most {limit} requests; this one has {len(items)}.")
    known = frozenset(await in_intake_thread(lambda: _known_kinds(principal)))
    if "idempotency-key" not in request.headers:
        # PostgreSQL: stored on the event loop, in chunks within one transaction.
        response = await fast_intake.create_batch(principal, items, known)
        if response is not None:
            return response
    unit = UnitOfWork()
    session = unit.session

    def handler():
        checked = [fast_intake.check_item(index, raw, known) for index, raw in enumerate(items)]
        valid = [(index, payload) for index, payload in enumerate(checked) if not isinstance(payload, dict)]
        # All valid items in one go (a few statements for the whole batch); a repeated
        # external_id still answers "existing" from its second occurrence on.
        created = service.create_many(session, principal, [payload for _index, payload in valid])
        for (index, _payload), outcome in zip(valid, created):
            checked[index] = fast_intake.outcome_item(index, outcome)
        return 200, fast_intake.batch_body(checked), {}

    return await unit.run(lambda: idempotency.run(request, session, principal, "create-batch", items, handler))


@router.get(
    "", response_model=ErasureRequestPage, operation_id="list_erasure_requests", summary="List erasure requests",
    responses=problem_responses(400),
)
def list_requests(
    session: SessionDep, principal: Reader,
    status: Status | None = None, source: Source | None = None, jurisdiction: Jurisdiction | None = None,
    external_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None, overdue: bool | None = None,
    created_after: datetime | None = None, created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    rows, next_cursor = service.list_for(
        session, principal, status=status, source=source, jurisdiction=jurisdiction, external_id=external_id,
        overdue=overdue, created_after=created_after, created_before=created_before, limit=limit, cursor=cursor,
    )
    return ErasureRequestPage(items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{request_id}", response_model=ErasureRequestOut, operation_id="get_erasure_request",
            summary="Get an erasure request")
def get_request(request_id: uuid.UUID, session: SessionDep, principal: Reader) -> Any:
    erasure_request = service.get_for(session, principal, request_id)
    out = service.to_out(erasure_request)
    searched = identity_service.searched_for(session, erasure_request.id)
    if searched is not None:
        out.searched = SearchedOut.model_validate(asdict(searched))
    jobs = job_service.jobs_of(session, erasure_request.id)
    if jobs:
        # Live progress of the unlearning jobs the request waits on.
        out.progress = {**(out.progress or {}), "jobs": [
            {"id": str(job.id), "status": job.status, "model_id": str(job.model_id) if job.model_id else None,
             "fraction": job.progress.get("fraction"), "step": job.progress.get("step"),
             "eta_seconds": job.progress.get("eta_seconds")}
            for job in jobs
        ]}
    return out


def _review(action: str):
    def endpoint(request_id: uuid.UUID, session: SessionDep, principal: Reviewer, body: OptionalReasonBody | None = None) -> Any:
        return service.to_out(service.review(session, principal, request_id, action, body.reason if body else None))

    return endpoint


def _review_with_reason(action: str):
    def endpoint(request_id: uuid.UUID, body: ReasonBody, session: SessionDep, principal: Reviewer) -> Any:
        return service.to_out(service.review(session, principal, request_id, action, body.reason))

    return endpoint


@router.post("/{request_id}/approve", response_model=ErasureRequestOut, responses=problem_responses(409, 422),
             name="approve_request", operation_id="approve_erasure_request", summary="Approve an erasure request")
def approve_request(request_id: uuid.UUID, session: SessionDep, principal: Reviewer, body: ApproveBody | None = None) -> Any:
    """A request whose requester is not verified (`identity_verification.status` unverified or
    failed) needs an `override_reason`, which the `request.approved` event records."""
    return service.to_out(service.review(session, principal, request_id, "approve", body.reason if body else None,
                                         override_reason=body.override_reason if body else None))


@router.post("/{request_id}/identity-verification", response_model=ErasureRequestOut, responses=TRANSITION,
             operation_id="set_identity_verification", summary="Record the requester's identity verification")
def set_identity_verification(request_id: uuid.UUID, body: IdentityVerification, session: SessionDep,
                              principal: VerificationWriter) -> Any:
    """Audited as `request.identity_verification`; with OBLIVIATE_AUTO_APPROVE_VERIFIED, a received
    request that becomes verified is approved by the policy."""
    return service.to_out(service.set_verification(session, principal, request_id, body))


for _action in ("cancel", "release"):
    router.add_api_route(
        f"/{{request_id}}/{_action}", _review(_action), methods=["POST"], response_model=ErasureRequestOut,
        responses=TRANSITION, name=f"{_action}_request", operation_id=f"{_action}_erasure_request",
        summary=f"{_action.capitalize()} an erasure request",
    )
router.add_api_route(
    "/{request_id}/hold", _review_with_reason("hold"), methods=["POST"], response_model=ErasureRequestOut,
    responses=TRANSITION, name="hold_request", operation_id="hold_erasure_request",
    summary="Hold an erasure request (reason required)",
)


@router.post("/{request_id}/deny", response_model=ErasureRequestOut, responses=TRANSITION, name="deny_request",
             operation_id="deny_erasure_request", summary="Deny an erasure request (reason required)")
def deny_request(request_id: uuid.UUID, body: DenyBody, session: SessionDep, principal: Reviewer) -> Any:
    """`ground`, when given, must be one the request's regime allows (app/requests/regimes.py)."""
    return service.to_out(service.review(session, principal, request_id, "deny", body.reason, ground=body.ground))


@router.post("/{request_id}/extend", response_model=ErasureRequestOut, responses=TRANSITION,
             operation_id="extend_erasure_request", summary="Extend the deadline of an erasure request")
def extend_request(request_id: uuid.UUID, body: ExtendBody, session: SessionDep, principal: Reviewer) -> Any:
    return service.to_out(service.extend(session, principal, request_id, body.days, body.reason))


@router.get("/{request_id}/audit", response_model=AuditTrail, operation_id="get_request_audit",
            summary="The audit trail of an erasure request")
def request_audit(request_id: uuid.UUID, session: SessionDep, principal: Reader) -> Any:
    erasure_request = service.get_for(session, principal, request_id)
    stream = audit_service.request_stream(erasure_request.id)
    result = audit_service.verify_stream(session, stream)
    return AuditTrail(
        request_id=erasure_request.id,
        events=[AuditEventOut.model_validate(e, from_attributes=True) for e in audit_service.events(session, stream)],
        chain_valid=result.valid, head=result.head, problem=result.problem,
    )
