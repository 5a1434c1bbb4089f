"""The dashboard in a real headless Chromium: a request's life from sign-in to its certificate,
with JavaScript and without, checked by axe-core at phone and laptop widths."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.browser import launch_chromium
from tests.dashboard.browser import axe_violations
from tests.live import serve
from tests.objects import hold_kinds
from tests.dashboard.helpers import new_key, new_request, seed_rehearsal, seed_unlearned

pytestmark = pytest.mark.timeout(600)
# A run writes its screenshots to a temporary folder; `OBLIVIATE_SCREENSHOTS=docs/screenshots`
# refreshes the documentation's on purpose (docs/dashboard.md).
SCREENSHOTS = Path(os.environ.get("OBLIVIATE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "obliviate-screenshots")
WIDTHS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 900}}


@pytest.fixture
def browser():
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def base_url(app):
    with serve(app) as url:
        yield url


def _sign_in(page, base_url, plaintext):
    page.goto(f"{base_url}/admin")
    assert page.url.endswith("/admin/login")
    page.get_by_label("API key").fill(plaintext)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/admin")


def _check(page, name: str, shots: bool, javascript: bool):
    """axe at both widths (it needs the page's JavaScript), and a screenshot of each page."""
    for label, size in WIDTHS.items():
        page.set_viewport_size(size)
        if javascript:
            assert axe_violations(page) == [], f"{name} at {label}"
        if shots and (label == "laptop" or name in ("request", "requests")):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            suffix = "" if label == "laptop" else "-phone"
            page.screenshot(path=str(SCREENSHOTS / f"{name}{suffix}.png"), full_page=True)
    page.set_viewport_size(WIDTHS["laptop"])


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_request_from_sign_in_to_certificate(browser, base_url, client, worker, javascript, tmp_path):
    reviewer = new_key(client="acme")
    # E-mail is a kind the client holds, so a request found nowhere completes as no_data_found.
    hold_kinds(client, {"Authorization": f"Bearer {reviewer}"}, "email")
    for n in range(6):
        new_request(client, reviewer, external_id=f"portal-{n:04d}", jurisdiction="ccpa" if n % 2 else "gdpr")
    request_id = new_request(client, reviewer, external_id="dsr-2026-0042")
    shots = javascript
    context = browser.new_context(java_script_enabled=javascript, bypass_csp=True, accept_downloads=True,
                                  viewport=WIDTHS["laptop"])
    page = context.new_page()
    _check(page.goto(f"{base_url}/admin/login") and page, "login", shots, javascript)
    _sign_in(page, base_url, reviewer)
    assert page.get_by_role("heading", name="Overview").is_visible()
    _check(page, "overview", shots, javascript)

    page.get_by_role("link", name="Requests", exact=True).click()
    page.get_by_label("Status").select_option("received")
    page.get_by_label("External id or request id").fill("dsr-2026-0042")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/admin/requests?*")
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "dsr-2026-0042" in rows.inner_text()
    page.get_by_role("link", name="Clear").click()
    _check(page, "requests", shots, javascript)

    page.get_by_role("link", name="dsr-2026-0042").click()
    page.wait_for_url(f"**/admin/requests/{request_id}")
    assert page.locator('[data-status="received"]').is_visible()
    page.get_by_role("link", name="Approve").click()
    _check(page, "confirm", shots, javascript)
    # Nobody verified this requester: approving needs the override's reason.
    page.get_by_label("Override reason").fill("Identity confirmed by phone.")
    page.get_by_role("button", name="Confirm: approve").click()
    page.wait_for_url(f"**/admin/requests/{request_id}")
    # The worker plans it (no data held: completed at once, with a certificate); the page follows
    # by polling with JavaScript and by refreshing itself without.
    page.wait_for_selector('[data-status="completed"]', timeout=120_000)
    page.reload()
    assert page.get_by_text("Chain verified").is_visible()
    for event in ("request.received", "request.approved", "request.completed", "certificate.issued"):
        assert page.locator("#audit").get_by_text(event).count() == 1
    assert page.get_by_text("Signature verified").is_visible()
    _check(page, "request", shots, javascript)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download certificate").click()
    certificate = json.loads(Path(download_info.value.path()).read_text())
    assert certificate["certificate"]["request_id"] == request_id

    page.get_by_role("link", name="Subject lookup").click()
    page.get_by_label("Identifier", exact=True).fill("someone@example.org")
    page.get_by_role("button", name="Look up").click()
    assert page.get_by_text("No dataset holds this subject").is_visible()
    assert "someone@example.org" not in page.content()
    _check(page, "subjects", shots, javascript)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/admin/login")
    context.close()

    other = browser.new_context(java_script_enabled=javascript)
    intruder = other.new_page()
    _sign_in(intruder, base_url, new_key(client="beta"))
    response = intruder.goto(f"{base_url}/admin/requests/{request_id}")
    assert response.status == 404 and "dsr-2026-0042" not in intruder.content()
    intruder.goto(f"{base_url}/admin/requests")
    assert "dsr-2026-0042" not in intruder.content()
    other.close()


def test_admin_pages_in_the_browser(browser, base_url, client, worker):
    admin = new_key("admin", client="ops")
    erased = new_request(client, new_key(client="acme"), external_id="acme-0001")
    model = seed_unlearned(erased)
    seed_rehearsal(model)
    context = browser.new_context(bypass_csp=True, viewport=WIDTHS["laptop"])
    page = context.new_page()
    _sign_in(page, base_url, admin)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name", exact=True).fill("privacy-portal")
    page.get_by_label("Client (empty: the name)").fill("acme")
    page.get_by_label("requests:write").check()
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_label("New key").input_value().startswith("obl_")
    _check(page, "keys", True, True)
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Verify the audit log").click()
    page.wait_for_selector('[data-status="completed"]', timeout=60_000)
    assert page.get_by_text("Every chain intact").is_visible()
    _check(page, "audit", True, True)
    for name in ("models", "datasets"):
        page.goto(f"{base_url}/admin/{name}")
        _check(page, name, True, True)
    page.get_by_role("link", name="churn-events").click()
    assert page.get_by_text("11,988").is_visible() and page.get_by_text("destroyed").count() == 1
    _check(page, "dataset", True, True)
    page.goto(f"{base_url}/admin/models/{model}")
    assert page.get_by_role("heading", name="SISA shard map").is_visible()
    assert page.locator("td.changed").count() == 1  # the one shard the erasure retrained
    _check(page, "model", True, True)
    page.goto(f"{base_url}/admin/requests/{erased}")
    chart = page.get_by_role("img", name=re.compile("Forest plot of the sanity check of churn-sisa"))
    assert chart.is_visible() and chart.locator("g.check").count() == 2  # one row per check
    assert page.get_by_role("row", name=re.compile("mia_auc 0.710 0.520 0.600")).count() == 1
    assert page.get_by_text("Signature verified").is_visible()
    _check(page, "request-verification", True, True)
    page.goto(f"{base_url}/admin/requests")
    assert page.locator("tbody").get_by_text("acme", exact=True).count() == 1  # labelled by client
    context.close()


def test_the_printable_report_prints_a_page_per_request(browser, base_url, client):
    """The report as a regulator gets it: Chromium prints it to PDF, one page per request, without
    the navigation."""
    reviewer = new_key(client="acme")
    ids = [new_request(client, reviewer, external_id=f"print-{n}") for n in range(3)]
    context = browser.new_context(bypass_csp=True, viewport=WIDTHS["laptop"])
    page = context.new_page()
    _sign_in(page, base_url, reviewer)
    page.goto(f"{base_url}/admin/requests/{ids[0]}")
    page.get_by_role("link", name="Printable report").click()
    page.wait_for_url(f"**/admin/requests/{ids[0]}/report")
    assert page.get_by_role("heading", name="Erasure request print-0").is_visible()
    assert axe_violations(page) == []
    one = page.pdf(format="A4")
    page.goto(f"{base_url}/admin/requests/report?q=print-")
    assert page.locator("article.report-page").count() == 3
    many = page.pdf(format="A4")
    page.emulate_media(media="print")
    assert not page.get_by_role("navigation", name="Main").is_visible()
    context.close()
    for pdf, pages in ((one, 1), (many, 3)):
        assert pdf.startswith(b"%PDF-")
        assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == pages
