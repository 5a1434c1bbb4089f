"""/docs (Swagger UI) and /redoc from assets shipped in the package (app/static/docs).

FastAPI's defaults load their scripts, styles and fonts from a CDN: in a restricted network the
pages stay blank, and a privacy tool should not pull third-party scripts into an admin's browser.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "docs"
PREFIX = "/static/docs"
SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
# The pages may load nothing from elsewhere: ReDoc's bundle still points an <img> at its vendor's
# CDN, and this keeps the browser from even asking. Inline script: the pages' own start-up code;
# blob: ReDoc's search worker.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _restricted(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = POLICY
    return page


def install(app: FastAPI) -> None:
    """Call with `FastAPI(docs_url=None, redoc_url=None)`: these routes replace FastAPI's own."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    title = f"{app.title} API"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _restricted(get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title, oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{PREFIX}/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
            # Swagger UI would otherwise send the document to an online validator for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        ))

    @app.get(oauth2_redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _restricted(get_redoc_html(
            openapi_url=app.openapi_url, title=title, with_google_fonts=False,
            redoc_js_url=f"{PREFIX}/redoc.standalone.js?v={REDOC_VERSION}",
            redoc_favicon_url=f"{PREFIX}/favicon-32x32.png",
        ))
