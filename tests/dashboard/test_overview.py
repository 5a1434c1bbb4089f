"""The overview's figures: one pass over the requests, counted per client."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from app.db import session_scope, utcnow
from app.requests.models import ErasureRequest
from tests.dashboard.helpers import new_key, new_request, sign_in


def test_overview_counts_overdue_and_due_soon_of_open_requests_only(client):
    acme = new_key(client="acme")
    overdue, soon, done, later = (new_request(client, acme) for _ in range(4))
    new_request(client, new_key(client="beta"))  # another client's: not counted for acme
    now = utcnow()
    with session_scope() as session:
        for request_id, due, status in ((overdue, now - timedelta(days=1), "received"),
                                        (soon, now + timedelta(days=3), "approved"),
                                        (done, now - timedelta(days=2), "completed")):
            session.execute(update(ErasureRequest).where(ErasureRequest.id == uuid.UUID(request_id)).values(due_at=due, status=status))
    sign_in(client, acme)
    page = client.get("/admin").text
    assert '<span class="n">1</span> overdue' in page
    assert '<span class="n">1</span> due in the next 7 days' in page
    assert '<a href="/admin/requests?status=received"><span class="n">2</span> received' in page
    assert '<a href="/admin/requests?status=completed"><span class="n">1</span> completed' in page
    listed = client.get("/admin/requests?overdue=yes").text
    assert f"/admin/requests/{overdue}" in listed and f"/admin/requests/{done}" not in listed
    due = client.get("/admin/requests?due_within_days=7").text
    assert f"/admin/requests/{soon}" in due and f"/admin/requests/{later}" not in due
