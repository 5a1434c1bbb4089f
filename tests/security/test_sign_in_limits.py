"""The dashboard's sign-in limit (issue 20, item 4): forwarding headers believed only from
OBLIVIATE_TRUSTED_PROXIES, failures counted per address and per key, exactly under
concurrency, and a CSRF token on the sign-in form."""

from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.dashboard.helpers import csrf_of, new_key, post_login
from tests.security.live_server import ANSWER_TIMEOUT, LiveServer, database_for_pass

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _live_login(server: LiveServer, http: httpx.Client, api_key: str, **headers: str) -> int:
    token = TOKEN.search(http.get(f"{server.base}/admin/login").text).group(1)
    response = http.post(f"{server.base}/admin/login", data={"api_key": api_key, "csrf_token": token}, headers=headers)
    return response.status_code


def test_serve_ignores_forwarded_for_from_loopback_unless_trusted(tmp_path, request):
    # Before: uvicorn trusted loopback's X-Forwarded-For, so each rotated header was a new,
    # unblocked address (30 bad keys, 30x401, no 429).
    with LiveServer(tmp_path, database_url=database_for_pass(request), DASHBOARD_LOGIN_ATTEMPTS="3") as server:
        with httpx.Client(timeout=ANSWER_TIMEOUT) as http:
            answers = [_live_login(server, http, "obl_guess", **{"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(6)]
    assert answers == [401, 401, 401, 429, 429, 429]


def test_compose_api_believes_forwarding_headers_only_from_trusted_proxies():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["api"]["command"]
    # Without --forwarded-allow-ips, uvicorn believes loopback (its default, 127.0.0.1,::1).
    assert "--forwarded-allow-ips=${OBLIVIATE_TRUSTED_PROXIES:-}" in command
    assert compose["x-obliviate"]["environment"]["OBLIVIATE_TRUSTED_PROXIES"] == "${OBLIVIATE_TRUSTED_PROXIES:-}"


def test_serve_passes_only_the_trusted_proxies_to_uvicorn(settings_env, monkeypatch, database_url):
    import uvicorn
    from typer.testing import CliRunner

    from app.cli import cli

    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.update(kwargs))
    # serve installs its own SIGTERM handling, and ignores SIGTERM on its way out.
    saved = signal.getsignal(signal.SIGTERM)
    try:
        settings_env(TRUSTED_PROXIES="10.0.0.5/8, 192.0.2.1")
        assert CliRunner().invoke(cli, ["serve", "--no-worker", "--port", "8799"]).exit_code == 0
        assert started["proxy_headers"] is True and started["forwarded_allow_ips"] == ["10.0.0.0/8", "192.0.2.1/32"]
        # Empty (the default): no proxy at all, where uvicorn's own default believes loopback.
        settings_env(TRUSTED_PROXIES="")
        assert CliRunner().invoke(cli, ["serve", "--no-worker", "--port", "8799"]).exit_code == 0
        assert started["forwarded_allow_ips"] == []
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_a_blocked_address_does_not_lock_out_a_valid_key(client, settings_env):
    # Before: once an address was blocked, every key from it got 429, however valid.
    settings_env(DASHBOARD_LOGIN_ATTEMPTS="3")
    good = new_key()
    for _ in range(3):
        assert post_login(client, "obl_wrong").status_code == 401
    assert post_login(client, "obl_still-wrong").status_code == 429
    response = post_login(client, good, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin"


def test_guesses_at_one_key_are_limited_whatever_the_address(client, settings_env):
    settings_env(DASHBOARD_LOGIN_ATTEMPTS="3", TRUSTED_PROXIES="0.0.0.0/0")
    good = new_key()
    wrong = good[:12] + "x" * 43
    answers = [post_login(client, wrong, headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(5)]
    assert answers == [401, 401, 401, 429, 429]
    # The key itself waits out the window too: otherwise a guess that hits would tell.
    assert post_login(client, good, headers={"X-Forwarded-For": "198.51.100.77"}).status_code == 429


@pytest.mark.parametrize("guess", ["obl_unknown-guess", "prefix-of-a-key"])
def test_concurrent_failures_are_counted_exactly(client, settings_env, guess):
    # Before: 40 parallel bad sign-ins against a limit of 10 got 13x401 (on PostgreSQL).
    settings_env(DASHBOARD_LOGIN_ATTEMPTS="10")
    api_key = new_key()[:12] + "y" * 43 if guess == "prefix-of-a-key" else guess
    token = csrf_of(client, "/admin/login")

    def attempt(_n: int) -> int:
        return client.post("/admin/login", data={"api_key": api_key, "csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(attempt, range(40)))
    assert sorted(answers) == [401] * 10 + [429] * 30


def test_the_sign_in_form_needs_its_csrf_token(client):
    good = new_key()
    form = client.get("/admin/login")
    assert 'name="csrf_token"' in form.text and "obliviate_login_csrf" in form.headers["set-cookie"]
    # A cross-site form post carries no token (and, SameSite=strict, no cookie): refused.
    missing = client.post("/admin/login", data={"api_key": good}, follow_redirects=False)
    forged = client.post("/admin/login", data={"api_key": good, "csrf_token": "guessed"}, follow_redirects=False)
    assert missing.status_code == forged.status_code == 403
    assert "obliviate_session" not in missing.headers.get("set-cookie", "")
    # The refusal hands a fresh form, with which the sign-in then works.
    token = TOKEN.search(forged.text).group(1)
    signed_in = client.post("/admin/login", data={"api_key": good, "csrf_token": token}, follow_redirects=False)
    assert signed_in.status_code == 303
