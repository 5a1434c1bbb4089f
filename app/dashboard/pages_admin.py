"""Admin pages: API keys (create, shown once; list; revoke) and audit log verification runs."""

from __future__ import annotations

import uuid

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from app.dashboard import service, verification
from app.dashboard.web import DashboardRoute, PosterDep, ViewerDep, render, require, see_other
from app.deps import SessionDep
from app.errors import NotFound
from app.keys import service as key_service
from app.keys.models import ApiKey

router = APIRouter(include_in_schema=False, route_class=DashboardRoute)


def _keys(session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.client, ApiKey.created_at.desc()).limit(1000)))


@router.get("/keys", response_class=HTMLResponse)
def key_list(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    return render(request, "keys.html", viewer, keys=_keys(session), scopes=key_service.SCOPES, created=None, error=None,
                  state_of=key_service.state_of)


@router.post("/keys", response_class=HTMLResponse)
def key_create(
    request: Request, viewer: PosterDep, session: SessionDep,
    name: Annotated[str, Form(max_length=300)] = "", client: Annotated[str, Form(max_length=300)] = "",
    owner: Annotated[str, Form(max_length=300)] = "",
    scopes: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies form defaults)
) -> Response:
    """The new key is in this one response only (no-store); the table keeps its hash."""
    require(viewer, "admin")
    name, client = name.strip()[:100], client.strip()[:100]
    error = None
    if not name:
        error = "Give the key a name."
    else:
        try:
            key, plaintext = key_service.create_key(session, name, key_service.parse_scopes(scopes), client=client or None,
                                                    actor=viewer.principal.actor, owner=owner.strip()[:100] or None)
        except key_service.InvalidScopes:
            error = "Choose at least one known scope."
    if error:
        return render(request, "keys.html", viewer, status_code=422, keys=_keys(session), scopes=key_service.SCOPES,
                      created=None, error=error, state_of=key_service.state_of)
    return render(request, "keys.html", viewer, status_code=201, keys=_keys(session), scopes=key_service.SCOPES,
                  created={"key": key, "plaintext": plaintext}, error=None, state_of=key_service.state_of)


@router.post("/keys/{key_id}/revoke")
def key_revoke(key_id: uuid.UUID, viewer: PosterDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    service.revoke_key(session, viewer.principal, key_id)
    return see_other("/admin/keys")


@router.get("/keys/{key_id}/revoke", response_class=HTMLResponse)
def key_revoke_confirm(request: Request, key_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    return render(request, "key_revoke.html", viewer, key=key_service.get_key(session, key_id))


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    runs = verification.recent(session)
    return render(request, "audit.html", viewer, runs=runs,
                  actors=key_service.actor_labels(session, [run.started_by for run in runs]))


@router.post("/audit/verify")
def audit_start(viewer: PosterDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    run = verification.start(session, viewer.principal)
    return see_other(f"/admin/audit/{run.id}")


def _run_or_404(session, run_id: uuid.UUID):
    run = verification.get(session, run_id)
    if run is None:
        raise NotFound("No verification run with this id.")
    return run


@router.get("/audit/{run_id}", response_class=HTMLResponse)
def audit_run(request: Request, run_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    run = _run_or_404(session, run_id)
    return render(request, "audit_run.html", viewer, run=run, actors=key_service.actor_labels(session, [run.started_by]))


@router.get("/audit/{run_id}/live", response_class=HTMLResponse)
def audit_run_live(request: Request, run_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "admin")
    return render(request, "_audit_run.html", viewer, run=_run_or_404(session, run_id))
