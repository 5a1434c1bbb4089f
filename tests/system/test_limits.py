"""Limits on what is costly. Over a limit the answer is a problem+json 413 (too large: body, batch,
prediction rows, upload) or 429 with Retry-After (too many active training/unlearning jobs), and
nothing is stored."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.dataset_files import artifact_files, upload
from tests.factories import WRITER_SCOPES, assert_problem, row_count, start_training
from tests.objects import approve, create_dataset, digits_csv, import_model, logistic_weights, request_body

MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def fresh_app(database_url, settings_env):
    """An app built after the given settings, for limits read once at start (the body limits)."""
    clients = []

    def build(**settings) -> TestClient:
        settings_env(**settings)
        from app.main import create_app

        test_client = TestClient(create_app(), raise_server_exceptions=False)
        clients.append(test_client.__enter__())
        return test_client

    yield build
    for test_client in clients:
        test_client.__exit__(None, None, None)


# --- request bodies -------------------------------------------------------------------------------

ID = str(uuid.uuid4())
JSON_ROUTES = [
    "/v1/erasure-requests", "/v1/erasure-requests/batch", f"/v1/erasure-requests/{ID}/approve",
    f"/v1/erasure-requests/{ID}/deny", f"/v1/erasure-requests/{ID}/extend", "/v1/models",
    "/v1/models/some-model/predict", "/v1/subjects/lookup",
]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_body_over_one_mib_is_413_on_every_route(client, writer, path):
    from app.requests.models import ErasureRequest

    body = json.dumps({"padding": "x" * (MIB + 1)}).encode()
    assert_problem(client.post(path, content=body, headers={**writer, **JSON}), 413)

    def chunks():  # no Content-Length: counted while it streams
        yield b'{"padding": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    streamed = client.post(path, content=chunks(), headers={**writer, **JSON})
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(streamed, 413)
    assert row_count(ErasureRequest) == 0


# --- batch size -------------------------------------------------------------------------------------

def test_batch_over_1000_items_is_413_and_stores_nothing(client, writer):
    from app.requests.models import ErasureRequest

    items = [request_body(subject={"identifiers": {"user_id": f"b{i}"}}) for i in range(1001)]
    problem = assert_problem(client.post("/v1/erasure-requests/batch", json=items, headers=writer), 413)
    assert "1000" in problem["detail"] and "1001" in problem["detail"]
    assert row_count(ErasureRequest) == 0


def test_batch_limit_follows_the_setting_and_allows_exactly_the_limit(client, writer, settings_env):
    from app.requests.models import ErasureRequest

    settings_env(MAX_BATCH_ITEMS=5)
    items = [request_body() for _ in range(6)]
    assert_problem(client.post("/v1/erasure-requests/batch", json=items, headers=writer), 413)
    assert row_count(ErasureRequest) == 0
    accepted = client.post("/v1/erasure-requests/batch", json=items[:5], headers=writer)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["created"] == 5


# --- prediction rows --------------------------------------------------------------------------------

def test_predict_over_max_rows_is_413(client, writer, settings_env, inference_worker):
    dataset = create_dataset(client, writer)
    model = import_model(client, writer, dataset["id"])
    settings_env(MAX_PREDICT_ROWS=4)
    url = f"/v1/models/{model['name']}/predict"
    problem = assert_problem(client.post(url, json={"rows": [[0.5] * 64] * 5}, headers=writer), 413)
    assert "4" in problem["detail"]
    ok = client.post(url, json={"rows": [[0.5] * 64] * 4}, headers=writer)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["probabilities"]) == 4


def test_predict_rows_that_fit_the_body_limit_but_not_the_row_limit_are_413(client, writer):
    """The default row limit holds on its own: 10,001 one-value rows are far under 1 MiB."""
    from app.config import get_settings

    rows = get_settings().max_predict_rows + 1
    body = json.dumps({"rows": [[0]] * rows}).encode()
    assert len(body) < MIB
    assert_problem(client.post("/v1/models/any/predict", content=body, headers={**writer, **JSON}), 413)


# --- uploads ---------------------------------------------------------------------------------------

def _no_leftovers(data_dir, before):
    assert artifact_files(data_dir) == before
    tmp = data_dir / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())


def test_dataset_upload_over_max_upload_bytes_is_413(fresh_app, make_key, data_dir):
    from app.datasets.models import Dataset, DatasetVersion

    limited = fresh_app(MAX_UPLOAD_BYTES=50_000)
    writer = make_key(WRITER_SCOPES, client="acme")
    before = artifact_files(data_dir)
    content = digits_csv()
    assert len(content) > 50_000
    # Declared length over the limit: refused before the body is read.
    assert_problem(upload(limited, writer, content), 413)
    # Streamed without a length: refused while it streams.
    boundary = "limit-test-boundary"
    fields = {"name": "digits", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "digit"}
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    ) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\n'

    def chunks():
        yield head.encode()
        for start in range(0, len(content), 8192):
            yield content[start:start + 8192]
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = limited.post(
        "/v1/datasets", content=chunks(),
        headers={**writer, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413)
    assert row_count(Dataset) == 0 and row_count(DatasetVersion) == 0
    _no_leftovers(data_dir, before)


def test_dataset_file_over_max_upload_bytes_is_413_when_counted_by_the_route(client, writer, settings_env, data_dir):
    """The limit is also read per request where the file is spooled (a changed setting counts)."""
    from app.datasets.models import Dataset

    settings_env(MAX_UPLOAD_BYTES=50_000)
    before = artifact_files(data_dir)
    assert_problem(upload(client, writer, digits_csv()), 413)
    assert row_count(Dataset) == 0
    _no_leftovers(data_dir, before)


def test_uploads_get_their_own_limit_above_the_json_body_limit(fresh_app, make_key):
    """A dataset bigger than 1 MiB is fine (uploads have MAX_UPLOAD_BYTES), a JSON body is not."""
    limited = fresh_app(MAX_BODY_BYTES=10_000)
    writer = make_key(WRITER_SCOPES, client="acme")
    assert len(digits_csv()) > 10_000
    response = upload(limited, writer, digits_csv())
    assert response.status_code == 201, response.text
    assert_problem(limited.post("/v1/erasure-requests", json=request_body(reason="x" * 10_000), headers=writer), 413)


def test_model_import_weights_over_max_upload_bytes_is_413(client, writer, settings_env, data_dir):
    from app.models.models import Model

    dataset = create_dataset(client, writer)
    settings_env(MAX_UPLOAD_BYTES=1000)
    weights = logistic_weights()
    assert len(weights) > 1000
    metadata = {
        "name": "too-big", "family": "logistic_regression", "dataset_version_id": dataset["id"], "record_ids": [0],
    }
    response = client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("w.safetensors", weights, "application/octet-stream")}, headers=writer,
    )
    assert_problem(response, 413)
    assert row_count(Model) == 0


# --- active jobs per client -----------------------------------------------------------------------------

def _finish_jobs(status: str = "completed") -> None:
    from app.db import session_scope
    from app.jobs.models import Job

    with session_scope() as session:
        session.execute(update(Job).where(Job.status.in_(("queued", "running"))).values(status=status))


def test_training_jobs_over_the_quota_are_429_with_retry_after(client, writer, make_key, settings_env):
    from app.jobs.models import Job
    from app.models.models import Model

    settings_env(MAX_ACTIVE_JOBS_PER_CLIENT=2)
    dataset = create_dataset(client, writer)["dataset_id"]
    for name in ("m1", "m2"):
        assert start_training(client, writer, dataset, name).status_code == 202
    refused = start_training(client, writer, dataset, "m3")
    problem = assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) > 0
    assert "2" in problem["detail"]
    assert row_count(Job) == 2 and row_count(Model) == 2

    # The quota is per client: another client is not held back.
    other = make_key(WRITER_SCOPES, client="globex")
    other_dataset = create_dataset(client, other)["dataset_id"]
    assert start_training(client, other, other_dataset, "m3").status_code == 202

    # Finished jobs free the quota.
    _finish_jobs("completed")
    assert start_training(client, writer, dataset, "m3").status_code == 202


def test_a_429_is_not_replayed_for_its_idempotency_key(client, writer, settings_env):
    settings_env(MAX_ACTIVE_JOBS_PER_CLIENT=1)
    dataset = create_dataset(client, writer)["dataset_id"]
    assert start_training(client, writer, dataset, "first").status_code == 202
    key = {"Idempotency-Key": f"train-{uuid.uuid4().hex}"}
    assert_problem(start_training(client, {**writer, **key}, dataset, "second"), 429)
    _finish_jobs("failed")
    retried = start_training(client, {**writer, **key}, dataset, "second")
    assert retried.status_code == 202, retried.text
    assert "idempotent-replayed" not in {h.lower() for h in retried.headers}


def test_active_unlearning_jobs_count_against_the_training_quota(client, writer, settings_env):
    from app.db import session_scope
    from app.jobs.models import Job
    from app.requests.models import ErasureRequest
    from app.unlearning.planner import plan_request
    from tests.dataset_files import subject_id

    dataset = create_dataset(client, writer)
    import_model(client, writer, dataset["id"])  # an import runs no job
    request = client.post(
        "/v1/erasure-requests", json=request_body(subject={"identifiers": {"user_id": subject_id(3)}}), headers=writer,
    ).json()
    assert approve(client, writer, request['id']).status_code == 200
    with session_scope() as session:
        plan_request(session, session.get(ErasureRequest, uuid.UUID(request["id"])))
    with session_scope() as session:
        kinds = session.scalars(select(Job.kind).where(Job.status.in_(("queued", "running")))).all()
    assert kinds == ["unlearning"]
    settings_env(MAX_ACTIVE_JOBS_PER_CLIENT=1)
    refused = start_training(client, writer, dataset["dataset_id"], "blocked")
    assert_problem(refused, 429)
    assert refused.headers["retry-after"].isdigit()


def test_background_jobs_never_count_against_the_quota(client, writer, settings_env):
    """The service's own low-priority jobs (a reference refill, a rehearsal) must not turn a
    client's next training into a 429."""
    from app.db import session_scope
    from app.jobs import service as job_service

    settings_env(MAX_ACTIVE_JOBS_PER_CLIENT=1)
    dataset = create_dataset(client, writer)["dataset_id"]
    with session_scope() as session:
        for kind in ("references", "rehearsal"):
            job_service.create(session, client="acme", kind=kind, model_id=None, payload={})
        assert job_service.count_active(session, "acme") == 0
        assert job_service.count_active(session, "acme", kind="rehearsal") == 1
    assert start_training(client, writer, dataset, "after-background").status_code == 202
    assert_problem(start_training(client, writer, dataset, "over-quota"), 429)


def test_concurrent_training_requests_cannot_overrun_the_quota(client, writer, settings_env):
    """Twelve requests at once with room for two: exactly two jobs, the rest 429."""
    from concurrent.futures import ThreadPoolExecutor

    from app.jobs.models import Job

    settings_env(MAX_ACTIVE_JOBS_PER_CLIENT=2)
    dataset = create_dataset(client, writer)["dataset_id"]
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda i: start_training(client, writer, dataset, f"race-{i}").status_code, range(12)))
    assert sorted(codes) == [202] * 2 + [429] * 10, codes
    assert row_count(Job) == 2
