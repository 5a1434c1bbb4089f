"""What many test files make and check the same way: the keys they act with, models trained by a
job, approved erasures, the subjects a model saw, and the checks of an answer or a table.

Loaded as a pytest plugin by tests/conftest.py, so its fixtures need no import. Objects a client
creates without a job (request bodies, uploaded datasets, imported models) are in tests/objects.py.
"""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import func, select

from tests.objects import approve
from tests.worker import execute_queued, plan_approved, wait_job

# The thresholds any result meets: for tests of what a method does to the figures rather than of
# whether it passes.
LAX = {"MAX_MIA_AUC": "1.0", "MAX_FORGET_HOLDOUT_GAP": "1.0", "MAX_HOLDOUT_DROP": "1.0", "TOLERANCE_AUDIT": "1.0"}
MLP_PARAMS = {"hidden": [32], "epochs": 8, "learning_rate": 0.01}
WRITER_SCOPES = "requests:write,requests:read,requests:review,models:write,models:read"


@pytest.fixture
def writer(make_key):
    """A key of the client `acme` that writes and reads its requests, datasets and models."""
    return make_key(WRITER_SCOPES, client="acme")


@pytest.fixture
def admin(make_key):
    """An admin key of the client `acme`, whose datasets and subjects the tests erase."""
    return make_key("admin", client="acme")


@pytest.fixture
def operator(make_key):
    """An admin key of a client of its own (`ops`), so that the tenants' keys are listed without it."""
    return make_key("admin", client="ops")


@pytest.fixture
def held_batches(settings_env):
    """Unlearning batch windows of an hour and no deadline margin: a job runs only when the test runs
    it (`execute_queued`), with the requests the test has approved by then."""
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0")


@pytest.fixture
def control_sees_the_subjects(monkeypatch):
    """The no-op control (workers/engine/verification/control.py) taken as showing that the checks
    can see the erased subjects, for tests of what follows a passing approximate result (a budget,
    a rehearsal's choice) under tolerances wide enough to pass the original too."""
    from workers.engine.verification import control

    monkeypatch.setattr(control, "testable", lambda block: True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: small networks run faster on one thread than on cores shared
    with other test processes, and the figures asserted do not depend on the machine's core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_problem(response, status: int) -> dict:
    """The answer is an RFC 9457 problem of `status`, with every member filled and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert problem["status"] == status
    assert "Traceback" not in response.text
    return problem


def row_count(model) -> int:
    from app.db import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def request_count() -> int:
    from app.requests.models import ErasureRequest

    return row_count(ErasureRequest)


def set_columns(request_id: str, **values) -> None:
    """Write columns of an erasure request directly, for the states and times the API does not set."""
    import uuid

    from sqlalchemy import update

    from app.db import session_scope
    from app.requests.models import ErasureRequest

    with session_scope() as session:
        session.execute(update(ErasureRequest).where(ErasureRequest.id == uuid.UUID(request_id)).values(**values))


def trail(client, headers, request_id: str) -> dict:
    """The request's audit trail, as the API serves it."""
    response = client.get(f"/v1/erasure-requests/{request_id}/audit", headers=headers)
    assert response.status_code == 200
    return response.json()


def family_and_config(name: str, **params):
    """A model family's implementation and its parsed `params`, as a worker loads them."""
    from app.families.registry import get_family

    spec = get_family(name)
    return spec.load_implementation(), spec.parse_params(params)


def start_training(client, headers, dataset_id: str, name: str, family: str = "logistic_regression", **body):
    """POST /v1/models; the answer as it came (202 when a training job was queued)."""
    body = {"name": name, "family": family, "dataset_id": dataset_id, **body}
    return client.post("/v1/models", json=body, headers=headers)


def train(client, headers, dataset_id: str, name: str, family: str = "mlp_classifier", timeout: float = 240,
          **body) -> dict:
    """A model trained by the worker; the completed job."""
    response = start_training(client, headers, dataset_id, name, family, **body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job = wait_job(client, headers, response.json()["id"], timeout=timeout)
    assert job["status"] == "completed", job["error"]
    return job


def train_in_process(client, headers, name: str, family: str = "mlp_classifier", params: dict | None = None,
                     **body) -> None:
    """A model trained by `execute_queued` on a dataset of its own: the digits, or for `causal_lm` notes
    of 20 subjects (u000…u019, 3 texts each) and the tiny language model. Holdout 20 %, seed 1 (see
    `seen_subjects`); an MLP is trained until it fits its data, as a served model would: an
    under-trained one keeps improving on every record, forget records included, under any
    fine-tuning, and hides what a method does."""
    from tests.dataset_files import digits_table, parquet_bytes, upload
    from tests.objects import TINY_LM, create_text_dataset

    if family == "causal_lm":
        dataset_id = create_text_dataset(client, headers, name=f"data-{name}")["dataset_id"]
    else:
        dataset_id = upload(client, headers, parquet_bytes(digits_table()), name=f"data-{name}").json()["dataset_id"]
    default = TINY_LM if family == "causal_lm" else {**MLP_PARAMS, "epochs": 30}
    response = start_training(client, headers, dataset_id, name, family, holdout_fraction=0.2,
                              params=params or default, seed=1, **body)
    assert response.status_code == 202, response.text
    assert execute_queued("training") == ["completed"]


def approved_request(client, headers, raw_id: str, jurisdiction: str = "gdpr", source: str = "admin",
                     callback_url: str | None = None) -> str:
    """The id of an approved erasure request for the subject whose user_id is `raw_id`."""
    body = {"subject": {"identifiers": {"user_id": raw_id}}, "jurisdiction": jurisdiction, "source": source}
    if callback_url:
        body["callback_url"] = callback_url
    created = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert approve(client, headers, request_id).status_code == 200
    return request_id


# How the in-process unlearning tests file their erasures.
batch_request = partial(approved_request, jurisdiction="ccpa", source="batch")


def erase_in_process(client, headers, raw_id: str) -> str:
    """Erase a subject in this process: an approved request, planned, its unlearning job run to
    completion; the request's id."""
    request_id = batch_request(client, headers, raw_id)
    plan_approved()
    assert execute_queued("unlearning") == ["completed"]
    return request_id


def trained_subjects(raw_ids: list[str], holdout_fraction: float, seed: int) -> list[str]:
    """The user_ids among a dataset's `raw_ids` outside its holdout: the weights saw their records."""
    import numpy as np

    from app.pseudonym import subject_key
    from workers.engine.partition import holdout_subjects

    keys = np.array([subject_key("user_id", raw) for raw in raw_ids], dtype=object)
    held = holdout_subjects(keys, holdout_fraction, seed)
    return [raw for raw, key in zip(raw_ids, keys) if key not in held]


def seen_subjects(count: int) -> list[str]:
    """`count` subjects of the digits that a model of `train_in_process` saw (outside its holdout)."""
    from tests.dataset_files import subject_id

    return trained_subjects([subject_id(i) for i in range(10, 120)], 0.2, 1)[:count]


def model_version(client, headers, name: str, number: int) -> dict:
    versions = client.get(f"/v1/models/{name}", headers=headers).json()["versions"]
    return next(version for version in versions if version["version"] == number)
