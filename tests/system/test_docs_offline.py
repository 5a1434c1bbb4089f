"""/docs and /redoc work without internet: their scripts and styles come from the package, and in
headless Chromium that may reach only the loopback address the pages show every operation."""

from __future__ import annotations

import re

import pytest

from tests.browser import launch_chromium, offline_page
from tests.live import serve


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_their_assets_from_the_service(client, page):
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for url in assets:
        assert url.startswith("/static/docs/"), url
        response = client.get(url)
        assert response.status_code == 200, url
    assert "cdn." not in html and "fonts.googleapis" not in html
    assert "default-src 'self'" in client.get(page).headers["content-security-policy"]


def test_the_vendored_assets_ship_with_their_licences():
    from app.docs import ASSETS

    names = {path.name for path in ASSETS.iterdir()}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= names
    assert {"swagger-ui.LICENSE", "swagger-ui.NOTICE", "redoc.LICENSE"} <= names


@pytest.fixture
def live_url(app):
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


def _operations(app) -> list[dict]:
    return [operation for operations in app.openapi()["paths"].values() for operation in operations.values()]


def _watch_console(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_swagger_ui_shows_every_operation_offline(app, live_url, browser):
    page, outside = offline_page(browser)
    errors = _watch_console(page)
    page.goto(live_url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    shown = page.locator(".opblock").count()
    assert shown == len(_operations(app)), shown
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any(path.replace("\u200b", "") == "/v1/erasure-requests" for path in paths), paths
    # The create operation lists its Idempotency-Key header once expanded.
    page.locator("#operations-erasure_requests-create_erasure_request .opblock-summary").click()
    page.wait_for_selector("#operations-erasure_requests-create_erasure_request tr[data-param-name='Idempotency-Key']")
    assert not outside, outside
    assert not errors, errors


def test_redoc_shows_the_operations_offline(app, live_url, browser):
    page, outside = offline_page(browser)
    errors = _watch_console(page)
    page.goto(live_url + "/redoc")
    page.wait_for_selector("h2:has-text('Create an erasure request')", timeout=30_000)
    for operation in _operations(app):
        section = page.locator(f"[id='operation/{operation['operationId']}']")
        assert section.count() == 1, operation["operationId"]
        assert operation["summary"] in section.locator("h2").first.inner_text(), operation["operationId"]
    assert not outside, outside
    # What the policy refused (ReDoc's vendor logo) is reported on the console; nothing else is.
    assert all("cdn.redoc.ly" in error for error in errors), errors
