"""From approved requests to verified removal, through the API and a real Celery worker."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from tests.dataset_files import digits_table, parquet_bytes, subject_id, upload
from tests.factories import MLP_PARAMS, approved_request, train, trained_subjects
from tests.worker import wait_for, wait_terminal

pytestmark = pytest.mark.timeout(900)
ERASED = [subject_id(i) for i in (3, 40, 41, 200)]


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers.get("Obliviate-Signature"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module", autouse=True)
def loopback_webhooks():
    """The receiver below listens on loopback over plain http, which webhooks refuse unless the
    operator allows it: set before the module's worker starts, so that it delivers there too."""
    from app.config import reset_settings

    allowed = {"OBLIVIATE_WEBHOOK_ALLOW_HTTP": "true", "OBLIVIATE_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]'}
    saved = {name: os.environ.get(name) for name in allowed}
    os.environ.update(allowed)
    reset_settings()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_settings()


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()


_train = partial(train, holdout_fraction=0.2, params=MLP_PARAMS, seed=3)
_wait_terminal = partial(wait_terminal, timeout=400)


def _trained_subject() -> str:
    """A subject outside the 20 % holdout of seed 3, so the weights did see their records."""
    return trained_subjects([subject_id(i) for i in range(5, 60)], 0.2, 3)[0]


def test_erasure_end_to_end(client, admin, worker, receiver):
    from app.artifacts.store import get_store
    from app.certificates.signing import verify_document
    from app.webhooks.service import client_secret, verify_signature

    callback, received = receiver
    table = digits_table()
    dataset_id = upload(client, admin, parquet_bytes(table)).json()["dataset_id"]
    _train(client, admin, dataset_id, "plain")
    _train(client, admin, dataset_id, "sharded", sisa={"shards": 4, "slices": 3})
    before = {name: client.get(f"/v1/models/{name}", headers=admin).json() for name in ("plain", "sharded")}
    old_hashes = {name: body["versions"][0]["sha256"] for name, body in before.items()}

    request_ids = [approved_request(client, admin, raw, callback_url=callback if i == 0 else None)
                   for i, raw in enumerate(ERASED)]
    nobody = approved_request(client, admin, "not-in-any-dataset")
    results = [_wait_terminal(client, admin, rid) for rid in request_ids]
    assert [r["status"] for r in results] == ["completed"] * len(ERASED), [r["status_reason"] for r in results]
    assert all(r["outcome"] == "erased" for r in results)
    jobs = results[0]["progress"]["jobs"]
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"completed"} and {j["fraction"] for j in jobs} == {1.0}
    empty = _wait_terminal(client, admin, nobody, timeout=60)
    assert empty["status"] == "completed" and empty["outcome"] == "no_data_found"

    # Coalesced: the four requests of one window share one job per model.
    audit = client.get(f"/v1/erasure-requests/{request_ids[0]}/audit", headers=admin).json()
    types = [e["type"] for e in audit["events"]]
    assert audit["chain_valid"]
    for expected in ("request.scheduled", "request.processing", "dataset.erased", "model.unlearned",
                     "request.verifying", "artifacts.destroyed", "request.completed", "certificate.issued"):
        assert expected in types, types

    # New current versions by the default policy: retrain for the plain model, sisa for the sharded one.
    after = {name: client.get(f"/v1/models/{name}", headers=admin).json() for name in ("plain", "sharded")}
    assert after["plain"]["current"] == 2 and after["sharded"]["current"] == 2
    assert after["plain"]["versions"][1]["origin"]["method"] == "retrain"
    assert after["sharded"]["versions"][1]["origin"]["method"] == "sisa"
    for name in ("plain", "sharded"):
        gone = client.get(f"/v1/models/{name}/versions/1/weights", headers=admin)
        assert gone.status_code == 410 and gone.headers["content-type"].startswith("application/problem+json")
        assert not get_store().exists(before[name]["versions"][0]["sha256"] if name == "plain" else old_hashes[name]) or name == "sharded"
        assert client.get(f"/v1/models/{name}/versions/2/weights", headers=admin).status_code == 200
    assert not get_store().exists(old_hashes["plain"])

    # The subjects are in no current dataset version or model manifest.
    for raw in ERASED:
        found = client.post("/v1/subjects/lookup", json={"identifiers": {"user_id": raw}}, headers=admin).json()
        assert found["datasets"] == [] and found["models"] == [], found

    # The certificate verifies against the published key; one altered byte breaks it.
    document = client.get(f"/v1/erasure-requests/{request_ids[0]}/certificate", headers=admin).json()
    public = client.get("/v1/keys/signing").json()["public_key"]
    assert verify_document(document, public) == (True, "valid")
    body = document["certificate"]
    assert body["subject_key_digest"] and "a-planted" not in json.dumps(document)
    assert {m["model"] for m in body["models"]} == {"plain", "sharded"}
    # Both are exact (retrain, sisa): format 3 labels their figures a sanity check and says why.
    assert all(m["method_kind"] == "exact" for m in body["models"])
    assert all(m["sanity_check"]["lineage_proof"]["in_new_manifest"] == 0 for m in body["models"])
    assert all(m["exact"]["weights_sha256"]["after"] == m["sha256_after"] for m in body["models"])
    sharded = next(m for m in body["models"] if m["model"] == "sharded")
    assert sharded["exact"]["shards_retrained"] and sharded["exact"]["slices_total"] == 12
    assert {(m["name"], m["held_subject"]) for m in body["scope"]["models"]} >= {("plain", True), ("sharded", True)}
    assert body["datasets"][0]["rows_removed"] == sum(table.column("user_id").to_pylist().count(r) for r in ERASED)
    assert body["audit_chain"]["head"] in {e["hash"] for e in audit["events"]}
    tampered = copy.deepcopy(document)
    tampered["certificate"]["datasets"][0]["rows_removed"] += 1
    assert verify_document(tampered, public)[0] is False

    # Re-uploading data that holds an erased subject filters them out (tombstones).
    again = upload(client, admin, parquet_bytes(table), name="digits-again")
    assert again.status_code == 201 and again.json()["filtered_rows"] == body["datasets"][0]["rows_removed"]

    # Webhooks: signed, one per status change of the request that asked for them.
    wait_for(lambda: any(b'"request.completed"' in b for _, b in received), 30, what="completion webhook")
    secret = client_secret("acme")
    assert all(verify_signature(secret, raw_body, header) for header, raw_body in received)
    events = [json.loads(b)["type"] for _, b in received]
    assert events[0] == "request.approved" and "request.processing" in events


def test_exact_retrain_matches_fresh_retrain(client, admin, worker):
    """The retrain method's figures equal a retrain we run ourselves on the same data."""
    from app.db import session_scope
    from app.families.registry import get_family
    from app.models.models import Model, ModelVersion
    from workers.engine.families.base import Shape
    from workers.engine.training import device_from_setting, evaluate, new_network, train_single
    from workers.engine.partition import partition
    from workers.engine.records import load_records

    table = digits_table()
    dataset_id = upload(client, admin, parquet_bytes(table)).json()["dataset_id"]
    _train(client, admin, dataset_id, "reference")
    request_id = approved_request(client, admin, _trained_subject())
    assert _wait_terminal(client, admin, request_id)["status"] == "completed"
    with session_scope() as session:
        model = session.query(Model).filter_by(name="reference").one()
        new = session.query(ModelVersion).filter_by(model_id=model.id, version=2).one()
        old = session.query(ModelVersion).filter_by(model_id=model.id, version=1).one()
        from app.datasets.models import Dataset, DatasetVersion

        dataset = session.get(Dataset, model.dataset_id)
        new_sha = session.get(DatasetVersion, new.dataset_version_id).sha256
        figures = new.metrics["verification"]["after"]
        features = list(dataset.feature_columns)
        seed, params, shape, holdout = new.seed, new.params, new.shape, model.holdout_fraction
    spec = get_family("mlp_classifier")
    family, config = spec.load_implementation(), spec.parse_params(params)
    records = load_records(new_sha, features)
    manifest = partition(records.record_ids, records.subject_keys, seed=seed, holdout_fraction=holdout, shards=1, slices=1)
    state = train_single(family, config, Shape(**shape), *records.rows_for(manifest.slice_ids(0, 0)), seed=seed,
                         device=device_from_setting("cpu"))
    network = new_network(family, config, Shape(**shape), seed)
    network.load_state_dict(state)
    holdout_ids = np.sort(manifest.record_ids[manifest.shards == -1])
    mine = evaluate(family, network, *records.rows_for(holdout_ids))
    assert mine["n"] == figures["holdout"]["n"]
    assert abs(mine["accuracy"] - figures["holdout"]["accuracy"]) < 1e-6
    assert abs(mine["loss"] - figures["holdout"]["loss"]) < 1e-5
    assert old.sha256 != new.sha256 and new.origin["method"] == "retrain"


def test_worker_killed_during_unlearning_completes_once(client, admin, worker):
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.jobs.models import Job
    from app.models.models import ModelVersion

    dataset_id = upload(client, admin, parquet_bytes(digits_table())).json()["dataset_id"]
    _train(client, admin, dataset_id, "slow", params={"hidden": [256, 256], "epochs": 200, "batch_size": 64})
    request_id = approved_request(client, admin, _trained_subject())

    def unlearning_pid():
        with session_scope() as session:
            job = session.scalars(select(Job).where(Job.kind == "unlearning")).first()
            if job is None:
                return None
            assert job.status in ("queued", "running"), f"job ended before it could be interrupted: {job.status}"
            return job.status == "running" and job.progress.get("step") == "erasing dataset rows" and job.progress.get("pid")

    pid = wait_for(unlearning_pid, 120, interval=0.2, what="the unlearning job to start")
    time.sleep(1.5)  # past the dataset erasure, into the retraining
    assert worker.kill(pid)
    result = _wait_terminal(client, admin, request_id, timeout=400)
    assert result["status"] == "completed", (result, worker.log())
    with session_scope() as session:
        job = session.scalars(select(Job).where(Job.kind == "unlearning")).one()
        model_versions = session.scalar(select(func.count()).select_from(ModelVersion))
    assert job.attempt >= 2 and job.status == "completed"
    assert model_versions == 2  # the trained version and exactly one unlearned version
