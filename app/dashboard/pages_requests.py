"""Requests: the filtered list with bulk approve, one request's page, its review actions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from app.audit import service as audit_service
from app.certificates import keys, signing, verification
from app.certificates import service as certificate_service
from app.dashboard import charts, queries
from app.dashboard.web import DashboardRoute, PosterDep, ViewerDep, render, require, see_other
from app.db import session_scope
from app.deps import SessionDep
from app.errors import Conflict, InvalidTransition, NotFound, ProblemError, Unprocessable
from app.jobs import service as job_service
from app.jobs.models import Job
from app.requests import lifecycle
from app.requests import service as request_service
from app.unlearning import sanity

router = APIRouter(include_in_schema=False, route_class=DashboardRoute)
ACTIONS = {
    "approve": "Approve", "deny": "Deny", "hold": "Put on hold", "release": "Release", "cancel": "Cancel",
    "extend": "Extend the deadline",
}
NEEDS_REASON = {"deny", "hold", "extend"}
MAX_BULK = 200


@router.get("/requests", response_class=HTMLResponse)
def request_list(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "requests:read")
    filters = queries.parse_filters(request.query_params)
    try:
        rows, next_cursor = queries.list_requests(session, viewer.principal, filters)
    except ProblemError as exc:  # a cursor that is not ours: the first page, with a note
        filters.errors.append(exc.detail)
        filters.cursor = None
        rows, next_cursor = queries.list_requests(session, viewer.principal, filters)
    return render(request, "requests.html", viewer, rows=rows, filters=filters, next_cursor=next_cursor,
                  statuses=queries.STATUSES, sources=queries.SOURCES, jurisdictions=queries.JURISDICTIONS,
                  days_left=lifecycle.days_left, days_class=queries.days_left_class)


@router.post("/requests/approve", response_class=HTMLResponse)
async def bulk_approve(request: Request, viewer: PosterDep) -> Response:
    """Step one shows what will be approved; the confirmation posts `confirmed` and does it."""
    require(viewer, "requests:review")
    form = await request.form()
    ids = []
    for raw in form.getlist("ids")[:MAX_BULK]:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    if not ids:
        return render(request, "bulk_done.html", viewer, status_code=422, approved=[], refused=[],
                      note="Select at least one request to approve.")
    if form.get("confirmed") != "yes":
        return render(request, "bulk_confirm.html", viewer, ids=ids)
    approved, refused = await run_in_threadpool(_approve_each, viewer, ids)
    return render(request, "bulk_done.html", viewer, approved=approved, refused=refused, note=None)


def _approve_each(viewer, ids: list[uuid.UUID]) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, str]]]:
    """Each approval in its own transaction: one request that cannot move does not undo the others."""
    approved, refused = [], []
    for request_id in ids:
        try:
            with session_scope() as session:
                request_service.review(session, viewer.principal, request_id, "approve", None)
            approved.append(request_id)
        except (InvalidTransition, NotFound) as exc:
            refused.append((request_id, exc.detail))
    return approved, refused


def _detail(session, viewer, request_id: uuid.UUID) -> dict:
    erasure_request = request_service.get_for(session, viewer.principal, request_id)
    jobs = job_service.jobs_of(session, erasure_request.id)
    return {"item": erasure_request, "jobs": jobs, "days_left": lifecycle.days_left,
            "days_class": queries.days_left_class, "live": _live(erasure_request, jobs)}


def _live(erasure_request, jobs) -> bool:
    """Whether the page should keep polling: the request or one of its jobs may still move."""
    return erasure_request.status not in lifecycle.TERMINAL or any(j.status in ("queued", "running") for j in jobs)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_detail(request: Request, request_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "requests:read")
    context = _detail(session, viewer, request_id)
    item = context["item"]
    stream = audit_service.request_stream(item.id)
    chain = audit_service.verify_stream(session, stream)
    certificate = certificate_service.get(session, item.id)
    certificate_valid = None
    if certificate is not None:
        certificate_valid = verification.verify(certificate_service.signed_document(certificate), keys.ring(session, True)).valid
    verifications = [shown for shown in (_verification(job) for job in context["jobs"]) if shown.figures]
    return render(request, "request.html", viewer, **context, events=audit_service.events(session, stream),
                  chain=chain, certificate=certificate, certificate_valid=certificate_valid,
                  verifications=verifications, alarm_notice=sanity.NOTICE,
                  actions=[(a, ACTIONS[a]) for a in queries.allowed_actions(item)] if viewer.principal.has("requests:review") else [])


@dataclass(frozen=True)
class ShownVerification:
    """One job's verification on the request page: its forest plot and figures, and for an exact
    method whether its failed sanity check raised the operator's alarm (app/unlearning/sanity.py)."""

    job: Job
    model: str
    method: str
    exact: bool
    alarm: bool
    verdicts: dict[str, Any] | None
    figures: list[charts.FigureRow]
    plot: charts.ForestPlot | None


def _verification(job: Job) -> ShownVerification:
    entry = (job.result or {}).get("model") or {}
    block = entry.get("verification") if isinstance(entry.get("verification"), dict) else {}
    verdicts = block.get("verdicts") if isinstance(block.get("verdicts"), dict) else None
    name, method = str(entry.get("model", "model")), str(entry.get("method", ""))
    kind = "sanity check" if sanity.exact(entry) else "verification checks"
    return ShownVerification(
        job=job, model=name, method=method, exact=sanity.exact(entry), alarm=sanity.failed(entry), verdicts=verdicts,
        figures=charts.verification_figures(block),
        plot=charts.forest_plot(verdicts, f"Forest plot of the {kind} of {name} ({method}), job {str(job.id)[:8]}: "
                                          "each check's estimate and interval against its tolerance band"))


@router.get("/requests/{request_id}/live", response_class=HTMLResponse)
def request_live(request: Request, request_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    """The status and job progress fragment the detail page polls (a short read per poll)."""
    require(viewer, "requests:read")
    return render(request, "_live.html", viewer, **_detail(session, viewer, request_id))


@router.get("/requests/{request_id}/certificate.json")
def certificate_download(request_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "requests:read")
    item = request_service.get_for(session, viewer.principal, request_id)
    certificate = certificate_service.get(session, item.id)
    if certificate is None:
        raise Conflict(f"No certificate yet: the request is '{item.status}'. Certificates are issued on completion.")
    # The API's bytes exactly (RFC 8785 from format 2 on): the ones whose SHA-256 the
    # `certificate.issued` audit event records, and that `obliviate certificate verify` accepts.
    return Response(signing.document_bytes(certificate_service.signed_document(certificate)), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="certificate-{item.id}.json"'})


def _action(action: str) -> str:
    if action not in ACTIONS:
        raise NotFound("No such action.")
    return action


@router.get("/requests/{request_id}/{action}", response_class=HTMLResponse)
def confirm_action(request: Request, request_id: uuid.UUID, action: str, viewer: ViewerDep, session: SessionDep) -> Response:
    """The confirmation step of an action, with its reason (and days) fields."""
    require(viewer, "requests:review")
    item = request_service.get_for(session, viewer.principal, request_id)
    return render(request, "confirm.html", viewer, item=item, action=_action(action), label=ACTIONS[action],
                  needs_reason=action in NEEDS_REASON, max_days=lifecycle.MAX_EXTENSION_DAYS)


@router.post("/requests/{request_id}/{action}")
def do_action(
    request_id: uuid.UUID, action: str, viewer: PosterDep, session: SessionDep,
    reason: Annotated[str, Form(max_length=2000)] = "", days: Annotated[str, Form(max_length=4)] = "",
) -> Response:
    require(viewer, "requests:review")
    _action(action)
    reason = reason.strip()
    if action in NEEDS_REASON and not reason:
        raise Unprocessable("A reason is required for this action.")
    if action == "extend":
        if not days.isdigit() or not 1 <= int(days) <= lifecycle.MAX_EXTENSION_DAYS:
            raise Unprocessable(f"Days must be a whole number from 1 to {lifecycle.MAX_EXTENSION_DAYS}.")
        request_service.extend(session, viewer.principal, request_id, int(days), reason)
    else:
        request_service.review(session, viewer.principal, request_id, action, reason or None)
    return see_other(f"/admin/requests/{request_id}")
