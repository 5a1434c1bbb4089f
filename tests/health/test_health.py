"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests import objects
from tests.conftest import TEST_REDIS_URL

URL = "/v1/erasure-requests"


request_body = partial(objects.request_body, "metrics")


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client):
    from app.config import get_settings

    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    broker = get_settings().broker_url
    assert broker.startswith("redis://") if TEST_REDIS_URL else broker.startswith("sqla+sqlite")


def test_readyz_is_503_when_the_database_is_unreachable(client, settings_env):
    from app import db

    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/nowhere")
    db.dispose_engine()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not ready"
        assert response.json()["checks"]["database"] == "unreachable"
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
    finally:
        db.dispose_engine()


def test_readyz_is_503_when_the_broker_is_unreachable(client, settings_env):
    settings_env(BROKER_URL="redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable"}


def test_metrics_follow_the_requests(client, headers):
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    before = samples(client)
    intake_count = before.get(("obliviate_intake_latency_seconds_count", ()), 0.0)
    ids = [client.post(URL, json=request_body(), headers=headers).json()["id"] for _ in range(4)]
    objects.approve(client, headers, ids[0])
    client.post(f"{URL}/{ids[1]}/deny", json={"reason": "r"}, headers=headers)
    with session_scope() as session:
        for rid in (ids[2], ids[1]):
            session.execute(update(ErasureRequest).where(ErasureRequest.id == uuid.UUID(rid)).values(
                due_at=datetime.now(UTC) - timedelta(days=1)))

    after = samples(client)
    assert after[("obliviate_erasure_requests", (("status", "received"),))] == 2
    assert after[("obliviate_erasure_requests", (("status", "approved"),))] == 1
    assert after[("obliviate_erasure_requests", (("status", "denied"),))] == 1
    assert ("obliviate_erasure_requests", (("status", "completed"),)) not in after
    # the denied request is past due too, but closed: only the open one is overdue
    assert after[("obliviate_erasure_requests_overdue", ())] == 1
    assert after[("obliviate_intake_latency_seconds_count", ())] == intake_count + 4
    assert after[("obliviate_intake_latency_seconds_sum", ())] > before.get(("obliviate_intake_latency_seconds_sum", ()), 0.0)
    buckets = {labels: value for (name, labels), value in after.items() if name == "obliviate_intake_latency_seconds_bucket"}
    assert buckets[(("le", "+Inf"),)] == intake_count + 4
    assert len(buckets) > 1


def test_failed_intake_is_not_counted_as_accepted(client, headers):
    before = samples(client).get(("obliviate_intake_latency_seconds_count", ()), 0.0)
    bad = request_body() | {"jurisdiction": "mars"}
    assert client.post(URL, json=bad, headers=headers).status_code == 422
    assert client.post(URL, json=request_body(), headers=headers).status_code == 201
    assert samples(client)[("obliviate_intake_latency_seconds_count", ())] == before + 1
