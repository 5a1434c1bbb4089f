"""The dashboard's contract: sign-in, sessions, CSRF, isolation, rate limit, schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.dashboard.models import DashboardSession
from app.db import session_scope, utcnow
from tests.dashboard.helpers import csrf_of, new_key, new_request, post_login, sign_in
from tests.objects import OVERRIDE


def _status(client, plaintext, request_id):
    return client.get(f"/v1/erasure-requests/{request_id}", headers={"Authorization": f"Bearer {plaintext}"}).json()["status"]


def test_without_session_the_overview_redirects_to_login(client):
    response = client.get("/admin", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    form = client.get("/admin/login")
    assert form.status_code == 200 and 'name="api_key"' in form.text


def test_valid_key_starts_a_session_with_strict_cookie(client):
    plaintext = new_key()
    response = post_login(client, plaintext, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert client.get("/admin").status_code == 200
    with session_scope() as session:
        row = session.scalar(select(DashboardSession))
        # Only a digest of the cookie's secret is stored.
        assert row.id_hash not in response.headers["set-cookie"]


def test_cookie_is_secure_over_https(app):
    with TestClient(app, base_url="https://testserver") as secure_client:
        response = post_login(secure_client, new_key(), follow_redirects=False)
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize("attempt", ["obl_not-a-real-key", "garbage", ""])
def test_bad_key_answers_401_and_reveals_nothing(client, attempt):
    response = post_login(client, attempt, follow_redirects=False)
    assert response.status_code == 401
    assert "That key was not accepted." in response.text
    assert "revoked" not in response.text.lower() and "set-cookie" not in response.headers


def test_revoked_key_gets_the_same_answer_as_an_unknown_one(client):
    admin = new_key("admin")
    victim = new_key()
    sign_in(client, admin)
    with session_scope() as session:
        from app.keys.models import ApiKey

        victim_id = session.scalar(select(ApiKey.id).where(ApiKey.key_hash.is_not(None)).order_by(ApiKey.created_at.desc()))
    token = csrf_of(client)
    assert client.post(f"/admin/keys/{victim_id}/revoke", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    client.cookies.clear()
    # One form for both, so the pages differ in nothing but what the key could reveal.
    token = csrf_of(client, "/admin/login")
    unknown = client.post("/admin/login", data={"api_key": "obl_unknown", "csrf_token": token})
    revoked = client.post("/admin/login", data={"api_key": victim, "csrf_token": token})
    assert unknown.status_code == revoked.status_code == 401
    assert unknown.text == revoked.text


def test_post_without_valid_csrf_token_is_refused(client):
    plaintext = new_key()
    request_id = new_request(client, plaintext)
    sign_in(client, plaintext)
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/admin/requests/{request_id}/approve", data=data, follow_redirects=False)
        assert response.status_code == 403
    assert _status(client, plaintext, request_id) == "received"
    token = csrf_of(client)
    # The requester is not verified: the approval carries the override's reason, as it must.
    response = client.post(f"/admin/requests/{request_id}/approve",
                           data={"csrf_token": token, "override_reason": OVERRIDE["override_reason"]}, follow_redirects=False)
    assert response.status_code == 303
    assert _status(client, plaintext, request_id) == "approved"


def test_another_sessions_token_is_not_valid(app, client):
    plaintext = new_key()
    request_id = new_request(client, plaintext)
    sign_in(client, plaintext)
    with TestClient(app) as other:
        sign_in(other, plaintext)
        foreign = csrf_of(other)
    assert foreign != csrf_of(client)
    response = client.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": foreign})
    assert response.status_code == 403


def test_another_clients_request_answers_404_and_admin_sees_all(app, client):
    acme = new_key(client="acme")
    acme_request = new_request(client, acme, external_id="acme-visible-1")
    sign_in(client, new_key(client="beta"))
    assert client.get(f"/admin/requests/{acme_request}").status_code == 404
    assert client.get(f"/admin/requests/{acme_request}/certificate.json").status_code == 404
    assert client.get(f"/admin/requests/{acme_request}/live").status_code == 404
    token = csrf_of(client)
    assert client.post(f"/admin/requests/{acme_request}/approve", data={"csrf_token": token}).status_code == 404
    assert ">acme-visible-1</a>" not in client.get("/admin/requests").text
    assert ">acme-visible-1</a>" not in client.get("/admin/requests?q=acme-visible-1").text
    with TestClient(app) as admin:
        sign_in(admin, new_key("admin", client="ops"))
        listing = admin.get("/admin/requests").text
        assert ">acme-visible-1</a>" in listing and "<td>acme</td>" in listing
        assert admin.get(f"/admin/requests/{acme_request}").status_code == 200


def test_session_ends_after_idle_time_and_at_its_absolute_end(client):
    plaintext = new_key()
    for column in ("last_seen_at", "expires_at"):
        sign_in(client, plaintext)
        assert client.get("/admin").status_code == 200
        with session_scope() as session:
            shift = timedelta(hours=1) if column == "last_seen_at" else timedelta(seconds=1)
            session.execute(update(DashboardSession).values({column: utcnow() - shift}))
        response = client.get("/admin", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login"
        with session_scope() as session:
            assert session.scalar(select(DashboardSession)) is None  # expired rows are removed


def test_deleted_session_row_sends_the_next_click_to_login(client):
    sign_in(client, new_key())
    assert client.get("/admin/requests").status_code == 200
    with session_scope() as session:
        session.execute(DashboardSession.__table__.delete())
    response = client.get("/admin/requests", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"


def test_logout_ends_the_session(client):
    sign_in(client, new_key())
    cookie = client.cookies.get("obliviate_session")
    token = csrf_of(client)
    assert client.post("/admin/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with session_scope() as session:
        assert session.scalar(select(DashboardSession)) is None
    client.cookies.set("obliviate_session", cookie, path="/admin")
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_revoking_a_key_ends_its_sessions(app, client):
    victim = new_key()
    sign_in(client, victim)
    with TestClient(app) as admin:
        sign_in(admin, new_key("admin"))
        page = admin.get("/admin/keys").text
        assert victim[:12] in page and victim not in page  # the prefix, never the key
        with session_scope() as session:
            from app.keys.models import ApiKey

            victim_id = session.scalar(select(ApiKey.id).where(ApiKey.prefix == victim[:12]))
        assert admin.get(f"/admin/keys/{victim_id}/revoke").status_code == 200  # the confirmation step
        token = csrf_of(admin)
        assert admin.post(f"/admin/keys/{victim_id}/revoke", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_failed_logins_are_rate_limited_per_address(client, settings_env):
    settings_env(DASHBOARD_LOGIN_ATTEMPTS="3")
    for _ in range(3):
        assert post_login(client, "obl_wrong").status_code == 401
    blocked = post_login(client, "obl_another-guess", follow_redirects=False)
    assert blocked.status_code == 429 and "set-cookie" not in blocked.headers


def test_forwarded_address_is_believed_only_from_a_trusted_proxy(client, settings_env):
    from app.dashboard.service import client_address

    settings_env(DASHBOARD_LOGIN_ATTEMPTS="2", TRUSTED_PROXIES="10.0.0.0/8")
    # An untrusted peer cannot pick its own bucket: the header is ignored.
    assert client_address("198.51.100.7", "203.0.113.9") == "198.51.100.7"
    # Behind trusted proxies the client is the rightmost untrusted hop.
    assert client_address("10.0.0.2", "1.2.3.4, 203.0.113.9, 10.0.0.5") == "203.0.113.9"
    # The test client's peer ("testclient") is untrusted: rotating the header does not escape the limit.
    for n in range(2):
        headers = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert post_login(client, "obl_wrong", headers=headers).status_code == 401
    headers = {"X-Forwarded-For": "203.0.113.99"}
    assert post_login(client, "obl_wrong", headers=headers).status_code == 429


def test_a_malformed_trusted_proxy_setting_is_refused_at_start(settings_env):
    from app.config import get_settings

    settings_env(TRUSTED_PROXIES="10.0.0.0/8, not-an-address")
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        get_settings()


def test_openapi_leaves_the_dashboard_out(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/admin")]


def test_pages_carry_security_headers(client):
    sign_in(client, new_key())
    response = client.get("/admin")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


def test_old_failures_expire_with_the_window(client, settings_env):
    from app.dashboard.models import LoginFailure

    settings_env(DASHBOARD_LOGIN_ATTEMPTS="2", DASHBOARD_LOGIN_WINDOW_SECONDS="60")
    with session_scope() as session:
        session.add_all([LoginFailure(bucket="testclient", at=utcnow() - timedelta(minutes=5)) for _ in range(3)]
                        + [LoginFailure(bucket="198.51.100.1", at=utcnow() - timedelta(minutes=5))])
    assert post_login(client, "obl_wrong").status_code == 401
    with session_scope() as session:
        assert [row.bucket for row in session.scalars(select(LoginFailure))] == ["testclient"]
    sign_in(client, new_key())


def test_a_session_ends_when_its_key_expires(client):
    from app.keys.models import ApiKey

    plaintext = new_key()
    sign_in(client, plaintext)
    assert client.get("/admin").status_code == 200
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.prefix == plaintext[:12]).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/admin", follow_redirects=False).headers["location"] == "/admin/login"
