"""`obliviate serve`'s start-up banner: where the dashboard is, and a first key whose scopes run
the quick start of docs/getting-started.md from filing a request to its audit trail."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.dashboard.helpers import sign_in
from tests.objects import request_body

GETTING_STARTED = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"


def test_the_banner_prints_the_dashboard_url_and_the_quick_starts_key(database_url):
    from app.cli.common import console
    from app.cli.serve import QUICK_START_KEY, _banner
    from app.config import get_settings

    with console.capture() as captured:
        _banner(get_settings(), "0.0.0.0", 8123, None)
    text = captured.get()
    assert "Dashboard:           http://127.0.0.1:8123/admin" in text
    assert QUICK_START_KEY in text
    # The same command as the quick start's (its line continuation aside).
    documented = " ".join(GETTING_STARTED.read_text().replace("\\\n", " ").split())
    assert QUICK_START_KEY in documented


def test_the_quick_starts_key_runs_the_quick_start(client, database_url):
    from app.cli.serve import QUICK_START_KEY
    from app.db import session_scope
    from app.keys import service as key_service

    words = shlex.split(QUICK_START_KEY)
    scopes = words[words.index("--scopes") + 1].split(",")
    with session_scope() as session:
        _key, plaintext = key_service.create_key(session, "portal", scopes, client="acme")
    headers = {"Authorization": f"Bearer {plaintext}", "Idempotency-Key": "portal-ticket-1234"}
    body = request_body(identifiers={"email": "jane@example.org"}, external_id="ticket-1234",
                        identity_verification={"status": "verified", "method": "portal"})
    created = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    read = {"Authorization": f"Bearer {plaintext}"}
    assert client.post(f"/v1/erasure-requests/{request_id}/approve", headers=read).json()["status"] == "approved"
    assert client.get(f"/v1/erasure-requests/{request_id}/audit", headers=read).json()["chain_valid"] is True
    # The same key signs in to the dashboard the banner points at, and sees the request there.
    sign_in(client, plaintext)
    assert re.search(r">ticket-1234</a>", client.get("/admin/requests").text)
