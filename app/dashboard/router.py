"""The admin dashboard: server-rendered pages over the same domain services as the API.

Every route is left out of /openapi.json. Pages work without JavaScript; the vendored htmx only
polls progress fragments. The pages themselves live in pages_*.py and are included here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.config import get_settings
from app.dashboard import pages_admin, pages_catalog, pages_requests, queries, service
from app.dashboard.web import HERE, DashboardRoute, PosterDep, ViewerDep, render, see_other
from app.db import get_sessionmaker
from app.deps import SessionDep
from app.errors import NotFound

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=DashboardRoute)
STATIC = {"htmx.min.js": "text/javascript", "dashboard.css": "text/css"}


@router.get("", response_class=HTMLResponse)
def overview(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    figures = queries.overview(session, viewer.principal)
    return render(request, "overview.html", viewer, figures=figures, statuses=queries.STATUSES)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return render(request, "login.html", None)


def _attempt_login(address: str, api_key: str) -> tuple[str, str | None]:
    """('ok', cookie) | ('bad', None) | ('blocked', None), in one transaction that commits either
    the new session or the recorded failure."""
    session = get_sessionmaker()()
    try:
        if service.login_blocked(session, address):
            outcome: tuple[str, str | None] = ("blocked", None)
        else:
            started = service.login(session, api_key)
            if started is None:
                service.record_failure(session, address)
                outcome = ("bad", None)
            else:
                outcome = ("ok", started[0])
        session.commit()
        return outcome
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, api_key: Annotated[str, Form(max_length=300)] = "") -> Response:
    peer = request.client.host if request.client else None
    address = service.client_address(peer, request.headers.get("x-forwarded-for"))
    outcome, cookie = await run_in_threadpool(_attempt_login, address, api_key)
    if outcome == "blocked":
        return render(request, "login.html", None, status_code=429,
                      error="Too many failed sign-ins from this address. Wait a few minutes and try again.")
    if outcome == "bad":
        return render(request, "login.html", None, status_code=401, error="That key was not accepted.")
    response = see_other("/admin")
    response.set_cookie(
        service.COOKIE, cookie, max_age=get_settings().dashboard_session_seconds, path="/admin",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, _viewer: PosterDep, session: SessionDep) -> Response:
    service.logout(session, request.cookies.get(service.COOKIE))
    response = see_other("/admin/login")
    response.delete_cookie(service.COOKIE, path="/admin", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound("No such file.")
    # Versioned by the release: a day of caching, then the browser asks again.
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=86400"})


router.include_router(pages_requests.router)
router.include_router(pages_catalog.router)
router.include_router(pages_admin.router)
