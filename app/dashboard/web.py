"""What every dashboard route shares: templates, the signed-in viewer, CSRF, HTML error pages.

Errors the domain services raise (404 for another client's id, 409 for a move the status does
not allow) are rendered as HTML pages here instead of the API's problem JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.dashboard import service
from app.dashboard.service import Viewer
from app.db import get_sessionmaker, utcnow
from app.errors import Forbidden, ProblemError
from app.routing import UnitOfWorkRoute

log = logging.getLogger("obliviate.dashboard")
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
LOGIN = "/admin/login"
# Everything is served by Obliviate itself; no inline script or style (the SVG charts use attributes).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class LoginRequired(Exception):
    """No live session: the browser is sent to the login page."""


class CsrfRejected(Exception):
    """A state-changing form without this session's token."""


class DashboardRoute(UnitOfWorkRoute):
    """Renders errors as pages and adds the security headers to every dashboard response; like
    the API's routes, each endpoint and its commit run on one thread."""

    # A page reads its filters from the query string and reports a bad one on the page itself.
    refuses_unknown_query_parameters = False

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = RedirectResponse(LOGIN, status_code=303)
            except CsrfRejected:
                response = error_page(request, 403, "The form expired or did not come from this dashboard. Reload the page and try again.")
            except ProblemError as exc:
                response = error_page(request, exc.status, exc.detail)
            except RequestValidationError:
                # Never the submitted values: a form field may hold an identifier.
                response = error_page(request, 422, "Some fields of the form are missing or not valid.")
            except StarletteHTTPException as exc:
                response = error_page(request, exc.status_code, exc.detail if isinstance(exc.detail, str) else "Error")
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    viewer = getattr(request.state, "viewer", None)
    return templates.TemplateResponse(request, "error.html", {"viewer": viewer, "status": status, "detail": detail},
                                      status_code=status)


def _resume(session_id: str | None) -> Viewer | None:
    session = get_sessionmaker()()
    try:
        viewer = service.resume(session, session_id)
        session.commit()
        return viewer
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def current_viewer(request: Request) -> Viewer:
    """The signed-in viewer, checked afresh on every request (session row, expiry, key still
    active). Its own short transaction, like the API's key lookup, so that a stale session is
    removed even when the page itself then fails."""
    viewer = await run_in_threadpool(_resume, request.cookies.get(service.COOKIE))
    if viewer is None:
        raise LoginRequired()
    request.state.viewer = viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def checked_viewer(request: Request) -> Viewer:
    """The viewer of a state-changing POST whose form carries this session's CSRF token."""
    viewer = await current_viewer(request)
    form = await request.form()
    if not service.csrf_valid(viewer, form.get("csrf_token")):
        log.info("dashboard: form without a valid CSRF token on %s", request.url.path)
        raise CsrfRejected()
    return viewer


PosterDep = Annotated[Viewer, Depends(checked_viewer)]


def require(viewer: Viewer, scope: str) -> None:
    """The same scope rule as the API's dependencies (an admin key holds every scope)."""
    if not viewer.principal.has(scope):
        raise Forbidden(f"This key lacks the '{scope}' scope.")


def render(request: Request, name: str, viewer: Viewer | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"viewer": viewer, "now": utcnow(), **context}, status_code=status_code)


# A page of a list, newest first: (limit, cursor) → (rows, next cursor).
PageLister = Callable[[int, str | None], tuple[Sequence[Any], str | None]]
LIST_PAGE = 50


def list_page(request: Request, viewer: Viewer, scope: str, template: str, name: str,
              lister: PageLister) -> HTMLResponse:
    """A list page with cursor pages: the scope checked, the `cursor` query parameter bounded,
    the rows rendered as `name` with `next_cursor` for the next page's link."""
    require(viewer, scope)
    cursor = (request.query_params.get("cursor") or "")[:200] or None
    rows, next_cursor = lister(LIST_PAGE, cursor)
    return render(request, template, viewer, **{name: rows}, next_cursor=next_cursor)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
