"""Remediation requests (docs/remediation.md): their list, and each one's dry run and checks."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.dashboard import charts
from app.dashboard.web import DashboardRoute, ViewerDep, list_page, render, require
from app.deps import SessionDep
from app.remediation import service as remediation_service

router = APIRouter(include_in_schema=False, route_class=DashboardRoute)


@router.get("/remediation", response_class=HTMLResponse)
def remediation_list(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    return list_page(request, viewer, "requests:review", "remediations.html", "remediations",
                     lambda limit, cursor: remediation_service.list_for(session, viewer.principal, limit=limit,
                                                                        cursor=cursor))


@router.get("/remediation/{request_id}", response_class=HTMLResponse)
def remediation_detail(request: Request, request_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "requests:review")
    remediation = remediation_service.get_for(session, viewer.principal, request_id)
    models = [{"model": m["model"], "entry": m, "bars": charts.remediation_bars(m.get("checks"))}
              for m in (remediation.result or {}).get("models", [])]
    return render(request, "remediation.html", viewer, remediation=remediation, models=models,
                  trail=remediation_service.trail(session, remediation))
