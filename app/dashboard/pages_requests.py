"""Requests: the filtered list with bulk approve, one request's page, its review actions."""

from __future__ import annotations

import csv
import hashlib
import io
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
from app.families.registry import data_kind
from app.jobs import service as job_service
from app.identities import service as identity_service
from app.jobs.models import Job
from app.keys import service as key_service
from app.models import service as model_service
from app.requests import lifecycle, regimes
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
                  days_left=lifecycle.days_left, days_class=queries.days_left_class,
                  outcome=queries.outcome_label, verification=queries.verification_label)


@router.get("/requests.csv")
def request_export(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    """The filtered list as CSV (every page, up to queries.EXPORT_LIMIT rows), to hand on."""
    require(viewer, "requests:read")
    filters = queries.parse_filters(request.query_params)
    out = io.StringIO()
    csv.writer(out).writerows(queries.export_rows(session, viewer.principal, filters))
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="erasure-requests.csv"'})


REPORT_LIMIT = 50


def _report(session, viewer, item) -> dict:
    """What one request's printed page shows: its facts, what was searched, its certificate with
    the verdicts it states, and its timeline with actors by key name and owner."""
    stream = audit_service.request_stream(item.id)
    events = audit_service.events(session, stream)
    certificate = certificate_service.get(session, item.id)
    searched = identity_service.searched_for(session, item.id)
    report = {"item": item, "regime": regimes.regime(item.jurisdiction), "outcome": queries.outcome_label(item),
              "searched": searched, "linked": sorted(set(searched.resolved_kinds) - set(searched.kinds)) if searched else [],
              "events": events, "actors": key_service.actor_labels(session, [e.actor for e in events]),
              "chain": audit_service.verify_stream(session, stream), "certificate": certificate}
    if certificate is not None:
        document = certificate_service.signed_document(certificate)
        report.update(body=certificate.body, models=verification.model_summaries(certificate.body),
                      sha256=hashlib.sha256(signing.document_bytes(document)).hexdigest(),
                      certificate_valid=verification.verify(document, keys.ring(session, True)).valid)
    return report


@router.get("/requests/report", response_class=HTMLResponse)
def requests_report(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    """The printable report of the filtered list's first REPORT_LIMIT requests, a page each."""
    require(viewer, "requests:read")
    rows, _next = queries.list_requests(session, viewer.principal, queries.parse_filters(request.query_params),
                                        limit=REPORT_LIMIT)
    return render(request, "report.html", viewer, reports=[_report(session, viewer, row) for row in rows])


@router.get("/requests/{request_id}/report", response_class=HTMLResponse)
def request_report(request: Request, request_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "requests:read")
    item = request_service.get_for(session, viewer.principal, request_id)
    return render(request, "report.html", viewer, reports=[_report(session, viewer, item)])


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
        unverified = await run_in_threadpool(_unverified, viewer, ids)
        return render(request, "bulk_confirm.html", viewer, ids=ids, unverified=unverified)
    override = str(form.get("override_reason") or "").strip()[:2000] or None
    approved, refused = await run_in_threadpool(_approve_each, viewer, ids, override)
    return render(request, "bulk_done.html", viewer, approved=approved, refused=refused, note=None)


def _unverified(viewer, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `ids` whose requester is not verified: approving them needs an override reason."""
    found = set()
    with session_scope() as session:
        for request_id in ids:
            try:
                if request_service.get_for(session, viewer.principal, request_id).verification_status != "verified":
                    found.add(request_id)
            except NotFound:
                continue
    return found


def _approve_each(viewer, ids: list[uuid.UUID], override_reason: str | None) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, str]]]:
    """Each approval in its own transaction: one request that cannot move does not undo the others."""
    approved, refused = [], []
    for request_id in ids:
        try:
            with session_scope() as session:
                request_service.review(session, viewer.principal, request_id, "approve", None,
                                       override_reason=override_reason)
            approved.append(request_id)
        except (InvalidTransition, NotFound, Unprocessable) as exc:
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
    events = audit_service.events(session, stream)
    return render(request, "request.html", viewer, **context, events=events,
                  actors=key_service.actor_labels(session, [event.actor for event in events]),
                  chain=chain, certificate=certificate, certificate_valid=certificate_valid,
                  samples=_samples_after(session, context["jobs"]),
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


def _samples_after(session, jobs) -> list[dict]:
    """For each job that unlearned an image model: the version after the erasure, and whether a
    grid of its samples was drawn (app/models/sample_grid.py)."""
    found = []
    for job in jobs:
        result = (job.result or {}).get("model") or {}
        if job.model_id is None or result.get("version_after") is None:
            continue
        model = model_service.get_model(session, job.model_id)
        if data_kind(model.family) != "image":
            continue
        version = model_service.get_version(session, model, int(result["version_after"]))
        found.append({"model": model, "version": version.version,
                      "grid": version.sample_grid_sha256 is not None and version.destroyed_at is None})
    return found


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
    override_reason: Annotated[str, Form(max_length=2000)] = "",
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
        request_service.review(session, viewer.principal, request_id, action, reason or None,
                               override_reason=(override_reason.strip() or None) if action == "approve" else None)
    return see_other(f"/admin/requests/{request_id}")
