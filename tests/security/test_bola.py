"""Object-level authorisation across clients, for every route that names an object.

Client A owns erasure requests (one completed, with a certificate; one scheduled, with an
unlearning job), a dataset and an imported model with its training job queued. Client B holds
every scope but `admin`. For each route B must get exactly what a truly missing id gets: 404 with
the same problem body, never 403 and never A's data; and B's attempts must change nothing. An
admin key sees everything. Lists never show another client's objects.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from tests.dataset_files import subject_id, upload
from tests.objects import (
    OVERRIDE,
    approve,
    hold_kinds,
    create_dataset,
    create_request,
    create_text_dataset,
    digits_csv,
    import_language_model,
    import_model,
    logistic_weights,
    request_body,
)

ALL_BUT_ADMIN = "requests:write,requests:read,requests:review,models:write,models:read"
REVIEW_BODIES = {
    "approve": OVERRIDE, "cancel": None, "release": None, "deny": {"reason": "no"}, "hold": {"reason": "wait"},
    "extend": {"days": 10, "reason": "complex"},
}
MISSING = str(uuid.uuid4())


def _plan(request_id: str) -> None:
    """What the planner does for an approved request (no worker needed)."""
    from app.db import session_scope
    from app.requests.models import ErasureRequest
    from app.unlearning.planner import plan_request

    with session_scope() as session:
        plan_request(session, session.get(ErasureRequest, uuid.UUID(request_id)))


@pytest.fixture
def world(client, make_key, inference_worker):
    a = make_key(ALL_BUT_ADMIN, client="alpha")
    b = make_key(ALL_BUT_ADMIN, client="beta")
    admin = make_key("admin", client="operators")
    dataset = create_dataset(client, a)
    model = import_model(client, a, dataset["id"], name="alpha-model")
    language_model = import_language_model(client, a, create_text_dataset(client, a)["id"], name="alpha-lm")
    training = client.post(
        "/v1/models", headers=a,
        json={"name": "alpha-queued", "family": "logistic_regression", "dataset_id": dataset["dataset_id"]},
    )
    assert training.status_code == 202, training.text

    # Found nowhere: completes at planning, with a certificate.
    completed = create_request(client, a, external_id="alpha-ext-1", identify=("user_id",))
    assert approve(client, a, completed['id']).status_code == 200
    _plan(completed["id"])
    # In the model's training data: planning schedules an unlearning job.
    scheduled = create_request(client, a, subject={"identifiers": {"user_id": subject_id(3)}})
    assert approve(client, a, scheduled['id']).status_code == 200
    _plan(scheduled["id"])
    trail = client.get(f"/v1/erasure-requests/{scheduled['id']}/audit", headers=a).json()
    unlearning_job = trail["events"][-1]["data"]["jobs"][0]
    pending = create_request(client, a)

    assert client.get(f"/v1/erasure-requests/{completed['id']}/certificate", headers=a).status_code == 200
    return {
        "a": a, "b": b, "admin": admin, "dataset": dataset, "model": model, "language_model": language_model,
        "training_job": training.json()["id"],
        "unlearning_job": unlearning_job, "completed": completed["id"], "scheduled": scheduled["id"],
        "pending": pending["id"],
    }


def _reads(w) -> list[tuple[str, str, str, dict | None]]:
    """(label, method, path template with {id}, body) → the path with A's object, and with a missing one."""
    return [
        ("request", "GET", "/v1/erasure-requests/{}", w["pending"], MISSING, None),
        ("request audit", "GET", "/v1/erasure-requests/{}/audit", w["pending"], MISSING, None),
        ("certificate", "GET", "/v1/erasure-requests/{}/certificate", w["completed"], MISSING, None),
        ("training job", "GET", "/v1/jobs/{}", w["training_job"], MISSING, None),
        ("unlearning job", "GET", "/v1/jobs/{}", w["unlearning_job"], MISSING, None),
        ("dataset", "GET", "/v1/datasets/{}", w["dataset"]["dataset_id"], MISSING, None),
        ("dataset by version id", "GET", "/v1/datasets/{}", w["dataset"]["id"], MISSING, None),
        ("model", "GET", "/v1/models/{}", w["model"]["name"], "no-such-model", None),
        ("weights", "GET", "/v1/models/{}/versions/1/weights", w["model"]["name"], "no-such-model", None),
        ("predict", "POST", "/v1/models/{}/predict", w["model"]["name"], "no-such-model", {"rows": [[0.0] * 64]}),
        ("generate", "POST", "/v1/models/{}/generate", w["language_model"]["name"], "no-such-model",
         {"prompt": "a", "max_new_tokens": 2}),
        ("score", "POST", "/v1/models/{}/score", w["language_model"]["name"], "no-such-model", {"texts": ["a"]}),
    ]


def _assert_same_404(response, missing, label):
    assert response.status_code == 404, f"{label}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), label
    assert missing.status_code == 404, f"{label} (missing): {missing.status_code} {missing.text}"
    assert response.json() == missing.json(), label


def test_another_clients_objects_answer_404_like_missing_ones(client, world):
    for label, method, template, own, missing_id, body in _reads(world):
        owner = client.request(method, template.format(own), json=body, headers=world["a"])
        assert owner.status_code == 200, f"{label} as owner: {owner.status_code} {owner.text}"
        other = client.request(method, template.format(own), json=body, headers=world["b"])
        missing = client.request(method, template.format(missing_id), json=body, headers=world["b"])
        _assert_same_404(other, missing, label)
        for secret in (own, world["dataset"]["dataset_id"], world["model"]["id"]):
            assert secret not in other.text, label


def test_admin_sees_every_clients_objects(client, world):
    for label, method, template, own, _missing, body in _reads(world):
        response = client.request(method, template.format(own), json=body, headers=world["admin"])
        assert response.status_code == 200, f"{label} as admin: {response.status_code} {response.text}"


def _state_of(request_id):
    from app.audit.models import AuditEvent
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    with session_scope() as session:
        request = session.get(ErasureRequest, uuid.UUID(request_id))
        events = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.stream == f"request:{request_id}")
        )
        return request.status, request.due_at, request.extended_days, events


@pytest.mark.parametrize("action", sorted(REVIEW_BODIES))
def test_review_actions_on_another_clients_request_answer_404_and_change_nothing(client, world, action):
    body = REVIEW_BODIES[action]
    target = world["pending"] if action != "release" else world["scheduled"]
    if action == "release":
        held = client.post(f"/v1/erasure-requests/{target}/hold", json={"reason": "check"}, headers=world["a"])
        assert held.status_code == 200
    before = _state_of(target)
    other = client.post(f"/v1/erasure-requests/{target}/{action}", json=body, headers=world["b"])
    missing = client.post(f"/v1/erasure-requests/{MISSING}/{action}", json=body, headers=world["b"])
    _assert_same_404(other, missing, action)
    assert _state_of(target) == before
    # The owner can still act, so the 404 was not an artefact of the request's state.
    assert client.post(f"/v1/erasure-requests/{target}/{action}", json=body, headers=world["a"]).status_code == 200


def test_admin_can_review_another_clients_request(client, world):
    response = client.post(
        f"/v1/erasure-requests/{world['pending']}/hold", json={"reason": "audit"}, headers=world["admin"],
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "on_hold"


def test_creating_from_another_clients_dataset_answers_404(client, world):
    body = {"name": "beta-model", "family": "logistic_regression"}
    for dataset_id in (world["dataset"]["dataset_id"], world["dataset"]["id"]):
        other = client.post("/v1/models", json={**body, "dataset_id": dataset_id}, headers=world["b"])
        missing = client.post("/v1/models", json={**body, "dataset_id": MISSING}, headers=world["b"])
        _assert_same_404(other, missing, "train on another client's dataset")
    import json

    metadata = {"name": "beta-import", "family": "logistic_regression", "dataset_version_id": world["dataset"]["id"],
                "record_ids": [0, 1, 2]}
    files = {"weights": ("w.safetensors", logistic_weights(), "application/octet-stream")}
    other = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)}, files=files, headers=world["b"])
    metadata["dataset_version_id"] = MISSING
    missing = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)}, files=files, headers=world["b"])
    _assert_same_404(other, missing, "import onto another client's dataset")


def test_same_names_and_keys_stay_per_client(client, world):
    # A dataset name of A's makes a new dataset for B, not a version of A's.
    mine = upload(client, world["b"], digits_csv(), name=world["dataset"]["name"])
    assert mine.status_code == 201, mine.text
    assert mine.json()["dataset_id"] != world["dataset"]["dataset_id"] and mine.json()["version"] == 1
    # A model name of A's: B's own model; each client reads its own.
    model = import_model(client, world["b"], mine.json()["id"], name=world["model"]["name"])
    assert model["id"] != world["model"]["id"]
    assert client.get(f"/v1/models/{world['model']['name']}", headers=world["b"]).json()["id"] == model["id"]
    assert client.get(f"/v1/models/{world['model']['name']}", headers=world["a"]).json()["id"] == world["model"]["id"]
    # An external_id of A's: a new request for B, not A's request returned as "existing".
    response = client.post(
        "/v1/erasure-requests", headers=world["b"],
        json=request_body("bola", jurisdiction="ccpa", source="admin", external_id="alpha-ext-1"),
    )
    assert response.status_code == 201 and response.json()["id"] != world["completed"]
    # An Idempotency-Key of A's: never replays A's response to B.
    body = request_body("bola", jurisdiction="ccpa", source="admin")
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}
    first = client.post("/v1/erasure-requests", json=body, headers={**world["a"], **key})
    second = client.post("/v1/erasure-requests", json=body, headers={**world["b"], **key})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in {h.lower() for h in second.headers}


def test_lists_never_show_another_clients_objects(client, world):
    own = {create_request(client, world["b"])["id"]}
    requests = client.get("/v1/erasure-requests", params={"limit": 200}, headers=world["b"])
    assert requests.status_code == 200
    assert {r["id"] for r in requests.json()["items"]} == own
    for status in ("received", "approved", "scheduled", "completed"):
        filtered = client.get("/v1/erasure-requests", params={"status": status}, headers=world["b"]).json()["items"]
        assert {r["id"] for r in filtered} <= own, status
    assert client.get("/v1/datasets", headers=world["b"]).json()["items"] == []
    assert client.get("/v1/models", headers=world["b"]).json()["items"] == []
    # A's own lists and the admin's lists do hold A's objects.
    a_requests = {r["id"] for r in client.get("/v1/erasure-requests", headers=world["a"]).json()["items"]}
    assert {world["pending"], world["completed"], world["scheduled"]} <= a_requests and not a_requests & own
    admin_list = client.get("/v1/erasure-requests", params={"limit": 200}, headers=world["admin"])
    admin_requests = {r["id"] for r in admin_list.json()["items"]}
    assert a_requests | own <= admin_requests
    admin_models = {m["name"] for m in client.get("/v1/models", headers=world["admin"]).json()["items"]}
    assert {"alpha-model", "alpha-queued"} <= admin_models
    admin_datasets = {d["id"] for d in client.get("/v1/datasets", headers=world["admin"]).json()["items"]}
    assert world["dataset"]["dataset_id"] in admin_datasets


def test_subject_lookup_never_reports_another_clients_holdings(client, world):
    body = {"identifiers": {"user_id": subject_id(3)}}
    own = client.post("/v1/subjects/lookup", json=body, headers=world["a"]).json()
    assert own["datasets"] and own["models"]
    hold_kinds(client, world["b"], "user_id")  # a kind beta holds too, so its look-up is valid and finds nothing
    other = client.post("/v1/subjects/lookup", json=body, headers=world["b"])
    assert other.status_code == 200
    assert other.json()["datasets"] == [] and other.json()["models"] == []
    assert world["dataset"]["dataset_id"] not in other.text and world["model"]["id"] not in other.text
