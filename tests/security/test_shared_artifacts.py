"""Artifacts are content-addressed, so two clients can share bytes: the same imported weights,
an identical manifest, an identical dataset file. One client's erasure must never delete bytes
another client's live version uses; the last erasure that uses them removes them."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from tests.dataset_files import subject_id
from tests.objects import approve, create_dataset, import_model, request_body
from tests.worker import wait_for

pytestmark = pytest.mark.timeout(600)
SCOPES = "requests:write,requests:read,requests:review,models:write,models:read"
ERASED = subject_id(1)  # records 36-71: among the 100 records the imported weights were trained on


def _erase_and_wait(client, headers) -> dict:
    body = request_body(identifiers={"user_id": ERASED}, source="admin")
    created = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert approve(client, headers, request_id).status_code == 200

    def terminal():
        found = client.get(f"/v1/erasure-requests/{request_id}", headers=headers).json()
        return found if found["status"] in ("completed", "failed") else None

    return wait_for(terminal, 300, interval=0.5, what=f"request {request_id}")


def _artifacts(client, headers, name: str) -> dict[str, str]:
    from app.db import session_scope
    from app.models.models import Model, ModelVersion

    body = client.get(f"/v1/models/{name}", headers=headers).json()
    with session_scope() as session:
        version = session.scalars(select(ModelVersion).join(Model, Model.id == ModelVersion.model_id).where(
            Model.id == uuid.UUID(body["id"]), ModelVersion.version == 1)).one()
        return {"weights": version.shards[0]["weights"], "manifest": version.manifest_sha256}


def _pending() -> int:
    from app.artifacts.models import PendingDeletion
    from app.db import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(PendingDeletion))


def test_one_clients_erasure_keeps_the_bytes_another_client_uses(client, make_key, worker):
    from app.artifacts.store import get_store

    alpha, beta = make_key(SCOPES, client="alpha"), make_key(SCOPES, client="beta")
    alpha_data, beta_data = create_dataset(client, alpha), create_dataset(client, beta)
    assert alpha_data["sha256"] == beta_data["sha256"]  # the same file, stored once
    import_model(client, alpha, alpha_data["id"], name="shared")
    import_model(client, beta, beta_data["id"], name="shared")
    shared = _artifacts(client, alpha, "shared")
    assert shared == _artifacts(client, beta, "shared")  # same weights, same manifest
    shared["dataset"] = alpha_data["sha256"]
    store = get_store()

    erased = _erase_and_wait(client, alpha)
    assert erased["status"] == "completed", erased["status_reason"]
    assert client.get("/v1/models/shared/versions/1/weights", headers=alpha).status_code == 410
    assert all(store.exists(sha) for sha in shared.values()), shared

    # The other client's model works as before: weights, predictions, look-ups with shards.
    weights = client.get("/v1/models/shared/versions/1/weights", headers=beta)
    assert weights.status_code == 200, weights.text
    assert weights.headers["X-Content-SHA256"] == shared["weights"]
    predicted = client.post("/v1/models/shared/predict", json={"rows": [[0.0] * 64]}, headers=beta)
    assert predicted.status_code == 200, predicted.text
    found = client.post("/v1/subjects/lookup", json={"identifiers": {"user_id": ERASED}, "include_slices": True},
                        headers=beta)
    assert found.status_code == 200, found.text  # read from the shared manifest
    assert [(m["model"], m["records"], m["slices"]) for m in found.json()["models"]] == [("shared", 36, [0])]

    # Its own erasure completes, and only now are the bytes gone.
    erased = _erase_and_wait(client, beta)
    assert erased["status"] == "completed", (erased["status_reason"], worker.log())
    assert client.get("/v1/models/shared/versions/1/weights", headers=beta).status_code == 410
    assert not any(store.exists(sha) for sha in shared.values()), shared
    assert _pending() == 0
    assert client.post("/v1/models/shared/predict", json={"rows": [[0.0] * 64]}, headers=beta).status_code == 200


@pytest.fixture
def shared_dataset(client, make_key):
    """Two clients' dataset versions backed by the same bytes: (their version ids, the sha256)."""
    alpha, beta = make_key(SCOPES, client="alpha"), make_key(SCOPES, client="beta")
    a, b = create_dataset(client, alpha), create_dataset(client, beta)
    assert a["sha256"] == b["sha256"]
    return (a["id"], b["id"]), a["sha256"]


def _destroy(session, version_id) -> list[str]:

    from app.datasets.erasure import mark_version_destroyed
    from app.datasets.models import DatasetVersion
    from app.unlearning import service as unlearning_service

    sha = mark_version_destroyed(session, session.get(DatasetVersion, uuid.UUID(version_id)))
    return unlearning_service.schedule_unreferenced(session, [sha])


def test_concurrent_destructions_delete_shared_bytes_exactly_once(shared_dataset):
    """Each transaction alone still sees the other's version live; the lock per sha256 makes the
    second decide after the first committed, so the bytes are scheduled once, never zero times."""
    from app.db import session_scope
    from workers.destruction import purge

    (a, b), sha = shared_dataset
    first_decided, release, answers = threading.Event(), threading.Event(), {}

    def first():
        with session_scope() as session:
            answers["first"] = _destroy(session, a)
            first_decided.set()
            release.wait(30)

    def second():
        first_decided.wait(30)
        with session_scope() as session:
            answers["second"] = _destroy(session, b)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_decided.wait(30)
    threading.Timer(1.0, release.set).start()  # the second is waiting on the lock by then
    for thread in threads:
        thread.join(60)
    assert answers == {"first": [], "second": [sha]}
    assert purge() == 1
    from app.artifacts.store import get_store

    assert not get_store().exists(sha)


def test_a_rolled_back_destruction_keeps_the_bytes(shared_dataset):
    from app.artifacts.store import get_store
    from app.db import session_scope
    from workers.destruction import purge

    (a, b), sha = shared_dataset
    with pytest.raises(RuntimeError), session_scope() as session:
        _destroy(session, a)
        assert _destroy(session, b) == [sha]
        raise RuntimeError("the job lost its lease before committing")
    assert _pending() == 0 and purge() == 0
    assert get_store().exists(sha)


def test_a_writer_that_uses_the_bytes_again_cancels_their_deletion(shared_dataset):
    from app.artifacts import service as artifact_service
    from app.artifacts.store import get_store
    from app.db import session_scope
    from app.unlearning import service as unlearning_service
    from workers.destruction import purge

    (a, b), sha = shared_dataset
    with session_scope() as session:
        _destroy(session, a)
        assert _destroy(session, b) == [sha]
    with session_scope() as session:  # a new upload or model version of the same content
        artifact_service.adopt(session, [sha])
    assert _pending() == 0 and purge() == 0 and get_store().exists(sha)

    # Once the sweeper has removed them, a writer learns so instead of referencing missing bytes.
    with session_scope() as session:
        unlearning_service.schedule_unreferenced(session, [sha])
    assert purge() == 1
    with pytest.raises(artifact_service.ArtifactReclaimed), session_scope() as session:
        artifact_service.adopt(session, [sha])


def test_a_failed_upload_never_deletes_bytes_a_concurrent_upload_uses(database_url, data_dir, monkeypatch):
    """Client A's upload stores new bytes and then fails; meanwhile client B uploads the same
    file. B's version must keep its bytes; the bytes of an upload that failed alone go."""
    from app.artifacts.store import get_store
    from app.datasets import service as dataset_service
    from app.db import session_scope
    from app.keys.service import Principal
    from tests.dataset_files import csv_bytes, digits_table
    from workers.destruction import purge

    path = data_dir / "shared-upload.csv"
    path.write_bytes(csv_bytes(digits_table(subjects=45)))
    real_insert = dataset_service.insert_subject_records

    def create(client: str) -> str:
        principal = Principal(key_id=client, client=client, name=client, scopes=frozenset({"models:write"}))
        with session_scope() as session:
            return dataset_service.create_dataset(session, principal, "digits", "user_id", "user_id", "digit", None, path).sha256

    beta: dict[str, str] = {}
    beta_thread = threading.Thread(target=lambda: beta.update(sha=create("beta")))

    def failing_insert(session, version_id, groups):
        real_insert(session, version_id, groups)
        if threading.current_thread() is beta_thread:
            return
        beta_thread.start()
        beta_thread.join(2)  # B waits for A's transaction (lock or SQLite write lock), or is done
        raise RuntimeError("the database went away")

    monkeypatch.setattr(dataset_service, "insert_subject_records", failing_insert)
    with pytest.raises(RuntimeError):
        create("alpha")
    monkeypatch.setattr(dataset_service, "insert_subject_records", real_insert)
    beta_thread.join(60)
    assert beta.get("sha"), "B's upload did not finish"
    purge()
    assert get_store().exists(beta["sha"])
    get_store().verify(beta["sha"])

    # Alone, a failed upload's new bytes are scheduled after its rollback and then removed.
    path.write_bytes(csv_bytes(digits_table(subjects=47)))
    monkeypatch.setattr(dataset_service, "insert_subject_records",
                        lambda *args: (_ for _ in ()).throw(RuntimeError("the database went away")))
    with pytest.raises(RuntimeError):
        create("alpha")
    assert _pending() == 1
    assert purge() == 1 and _pending() == 0
