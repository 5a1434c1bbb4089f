"""Training through the API and a real Celery worker: upload digits, train with and without
SISA, predict, look a subject up, download weights and check their hash."""

from __future__ import annotations

import hashlib
import io
import tarfile
from functools import partial

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from sqlalchemy import func, select

from tests.dataset_files import FEATURES, digits_table, parquet_bytes, subject_id, upload
from tests.factories import MLP_PARAMS, train
from tests.worker import wait_job

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def model_headers(make_key):
    return make_key("models:write,models:read,requests:review,requests:read", client="acme")


_train = partial(train, params=MLP_PARAMS, seed=7)


def test_train_predict_lookup_download(client, model_headers, worker):
    table = digits_table()
    created = upload(client, model_headers, parquet_bytes(table))
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]

    single = _train(client, model_headers, dataset_id, "digits-mlp")
    sisa = _train(client, model_headers, dataset_id, "digits-sisa", sisa={"shards": 3, "slices": 2})
    assert single["progress"]["fraction"] == 1.0 and sisa["result"]["model_version"] == 1

    model = client.get("/v1/models/digits-mlp", headers=model_headers).json()
    assert model["current"] == 1 and len(model["versions"]) == 1
    holdout = model["versions"][0]["metrics"]["holdout"]
    assert holdout["n"] > 50 and holdout["accuracy"] > 0.8, holdout

    # Predict: probabilities over the 10 digits, summing to one, mostly right.
    rows = np.column_stack([table.column(c).to_numpy() for c in FEATURES])[:200].astype(float).tolist()
    labels = table.column("digit").to_numpy()[:200]
    for name in ("digits-mlp", "digits-sisa"):
        answer = client.post(f"/v1/models/{name}/predict", json={"rows": rows}, headers=model_headers)
        assert answer.status_code == 200, answer.text
        probabilities = np.array(answer.json()["probabilities"])
        assert probabilities.shape == (200, 10)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        assert (probabilities.argmax(axis=1) == labels).mean() > 0.8
    bad = client.post("/v1/models/digits-mlp/predict", json={"rows": [[1.0, 2.0]]}, headers=model_headers)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")

    # Weights: one safetensors file whose sha256 is the version's; SISA: a tar of shard files.
    weights = client.get("/v1/models/digits-mlp/versions/1/weights", headers=model_headers)
    assert weights.status_code == 200
    assert hashlib.sha256(weights.content).hexdigest() == model["versions"][0]["sha256"]
    assert set(load_safetensors(weights.content)) and not weights.content.startswith(b"\x80")
    archive = client.get("/v1/models/digits-sisa/versions/1/weights", headers=model_headers)
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = sorted(m.name for m in tar.getmembers())
        shard_hashes = [hashlib.sha256(tar.extractfile(n).read()).hexdigest() for n in names if n.endswith(".safetensors")]
    assert names[:3] == ["index.json", "shard-000.safetensors", "shard-001.safetensors"] and len(shard_hashes) == 3
    sisa_model = client.get("/v1/models/digits-sisa", headers=model_headers).json()
    assert hashlib.sha256("\n".join(shard_hashes).encode()).hexdigest() == sisa_model["versions"][0]["sha256"]

    # Lineage: the subject is found in the dataset and both models, with its record count.
    raw = subject_id(5)
    expected = table.column("user_id").to_pylist().count(raw)
    found = client.post("/v1/subjects/lookup", json={"identifiers": {"user_id": raw}}, headers=model_headers)
    assert found.status_code == 200, found.text
    body = found.json()
    assert raw not in found.text
    assert [d["records"] for d in body["datasets"]] == [expected]
    assert sorted(m["model"] for m in body["models"]) == ["digits-mlp", "digits-sisa"]
    sisa_entry = next(m for m in body["models"] if m["model"] == "digits-sisa")
    assert sisa_entry["shard"] in (0, 1, 2)


def test_worker_killed_mid_training_finishes_once(client, model_headers, worker, database_url):
    from app.db import session_scope
    from app.models.models import ModelVersion
    from tests.worker import wait_for

    created = upload(client, model_headers, parquet_bytes(digits_table()))
    dataset_id = created.json()["dataset_id"]
    body = {"name": "killed", "family": "mlp_classifier", "dataset_id": dataset_id,
            "params": {"hidden": [256, 256], "epochs": 400, "batch_size": 64}, "sisa": {"shards": 2, "slices": 4}}
    job_id = client.post("/v1/models", json=body, headers=model_headers).json()["id"]

    def running_pid():
        job = client.get(f"/v1/jobs/{job_id}", headers=model_headers).json()
        assert job["status"] in ("queued", "running"), f"job ended before it could be interrupted: {job}"
        return job["status"] == "running" and job["progress"].get("pid")

    pid = wait_for(running_pid, 60, what="training to start")
    assert worker.kill(pid), "the job's process is not one of the worker's"
    job = wait_job(client, model_headers, job_id, timeout=300)
    assert job["status"] == "completed", (job, worker.log())
    assert job["attempt"] >= 2
    with session_scope() as session:
        versions = session.scalar(select(func.count()).select_from(ModelVersion))
    assert versions == 1
