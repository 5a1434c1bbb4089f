"""Headless Chromium for browser tests: the system's /usr/bin/chromium (Debian's package, which
.ci/run installs) driven by Playwright; never a browser build of Playwright's own.

    with launch_chromium() as browser:
        page, outside = offline_page(browser)
        page.goto(base_url + "/docs")
        ...
        assert not outside   # nothing was fetched from beyond the loopback address
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
# No sandbox: CI runs as root. The rest keeps the browser from calling home on its own.
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@contextmanager
def launch_chromium() -> Iterator:
    """A Playwright `Browser` on the system's Chromium, closed when the block ends."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser):
    """A page in a fresh context that may only reach loopback addresses, as on a machine without
    internet. Returns (page, outside): `outside` lists every other URL the page tried to load
    (each refused)."""
    context = browser.new_context()
    outside: list[str] = []

    def route(route, request):
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob") or url.hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    context.route("**/*", route)
    return context.new_page(), outside
