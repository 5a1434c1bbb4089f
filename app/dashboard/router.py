"""The admin dashboard: server-rendered pages over the same domain services as the API.

Every route is left out of /openapi.json. Pages work without JavaScript; the vendored htmx only
polls progress fragments. The pages themselves live in pages_*.py and are included here.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.config import get_settings
from app.dashboard import pages_admin, pages_catalog, pages_remediation, pages_requests, queries, service
from app.dashboard.web import HERE, DashboardRoute, PosterDep, ViewerDep, render, see_other
from app.db import get_sessionmaker
from app.deps import SessionDep
from app.errors import NotFound

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=DashboardRoute)
# The sign-in form's CSRF token, before there is a session to keep it in.
LOGIN_CSRF_COOKIE = "obliviate_login_csrf"
STATIC = {"htmx.min.js": "text/javascript", "dashboard.css": "text/css", "report.css": "text/css"}


@router.get("", response_class=HTMLResponse)
def overview(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    figures = queries.overview(session, viewer.principal)
    return render(request, "overview.html", viewer, figures=figures, statuses=queries.STATUSES)


def _login_page(request: Request, status_code: int = 200, error: str | None = None, token: str | None = None) -> Response:
    """The sign-in form, with a new CSRF token unless the posted one (already checked) is kept.
    The token rides in a cookie too (double submit): a page of another site can post the form
    but can neither read the token nor, SameSite=strict, send the cookie, so it cannot sign a
    browser in under the attacker's key."""
    fresh = token is None
    token = token or secrets.token_urlsafe(32)
    response = render(request, "login.html", None, status_code=status_code, login_csrf=token, error=error)
    if fresh:
        response.set_cookie(
            LOGIN_CSRF_COOKIE, token, max_age=get_settings().dashboard_idle_seconds, path="/admin/login",
            httponly=True, samesite="strict", secure=request.url.scheme == "https",
        )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_page(request)


def _attempt_login(address: str, api_key: str) -> tuple[str, str | None]:
    """('ok', cookie) | ('bad', None) | ('blocked', None), in one transaction that commits either
    the new session or the recorded failure."""
    session = get_sessionmaker()()
    try:
        bucket = service.login_bucket(session, address, api_key)
        if not service.claim_login_attempt(session, bucket):
            outcome: tuple[str, str | None] = ("blocked", None)
        else:
            started = service.login(session, api_key)
            if started is None:
                service.record_failure(session, bucket)
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
async def login(
    request: Request, api_key: Annotated[str, Form(max_length=300)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _login_page(request, 403, "The sign-in form had expired. Please sign in again.")
    peer = request.client.host if request.client else None
    address = service.client_address(peer, request.headers.get("x-forwarded-for"))
    outcome, cookie = await run_in_threadpool(_attempt_login, address, api_key)
    if outcome == "blocked":
        return _login_page(request, 429, "Too many failed sign-ins. Wait a few minutes and try again.", csrf_token)
    if outcome == "bad":
        return _login_page(request, 401, "That key was not accepted.", csrf_token)
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
router.include_router(pages_remediation.router)
router.include_router(pages_admin.router)
