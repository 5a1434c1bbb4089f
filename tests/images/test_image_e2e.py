"""An image model from upload to certified erasure, through the API: upload a zip of creators'
works, train a tiny image_diffusion model, sample it, erase a creator; the request completes with
a certificate that names the image checks, and the old weights answer 410. Jobs run in this
process (`execute_queued`) and inference calls are answered by the worker's own task functions,
so the test runs the same code as a worker without starting one."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.image_files import creator_id, creator_works, images_zip, upload_images
from tests.objects import TINY_DIFFUSION, approve
from tests.worker import execute_queued, plan_approved

pytestmark = pytest.mark.timeout(600)
SEED, HOLDOUT = 3, 0.25
CREATORS = 8
PARAMS = {**TINY_DIFFUSION, "epochs": 2}
IMAGE_CHECKS = ["mia_auc", "per_record_audit", "copies", "style"]


@pytest.fixture
def inference_in_process(monkeypatch):
    """The inference queue answered here by the worker's task functions (workers/tasks.py)."""
    from app import queue
    from workers import tasks

    def answer(task, kwargs, timeout):
        return getattr(tasks, task.rsplit(".", 1)[1])(**kwargs)

    monkeypatch.setattr(queue, "call", answer)


def trained_creator() -> str:
    """A creator outside the holdout of this seed, so the weights saw their works."""
    from app.pseudonym import subject_key
    from workers.engine.partition import holdout_subjects

    raw = [creator_id(i) for i in range(CREATORS)]
    held = holdout_subjects(np.asarray([subject_key("creator", r) for r in raw], dtype=object), HOLDOUT, SEED)
    return next(r for r in raw if subject_key("creator", r) not in held)


def test_image_model_erasure_end_to_end(client, admin, settings_env, inference_in_process):
    from app.certificates.signing import verify_document

    settings_env(AUDIT_REFERENCES="2")
    works = creator_works(creators=CREATORS, per_creator=6)
    uploaded = upload_images(client, admin, images_zip(works), name="art")
    assert uploaded.status_code == 201, uploaded.text
    dataset_id = uploaded.json()["dataset_id"]
    response = client.post("/v1/models", headers=admin, json={
        "name": "art-ddpm", "family": "image_diffusion", "dataset_id": dataset_id, "holdout_fraction": HOLDOUT,
        "seed": SEED, "params": PARAMS, "unlearning_method": "gradient_difference"})
    assert response.status_code == 202, response.text
    assert execute_queued("training") == ["completed"]

    sampled = client.post("/v1/models/art-ddpm/sample", json={"n": 4, "seed": 1, "steps": 5}, headers=admin)
    assert sampled.status_code == 200, sampled.text
    images = sampled.json()["images"]
    assert len(images) == 4 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    again = client.post("/v1/models/art-ddpm/sample", json={"n": 4, "seed": 1, "steps": 5}, headers=admin)
    assert again.json()["images"] == images

    erased = trained_creator()
    created = client.post("/v1/erasure-requests", headers=admin, json={
        "subject": {"identifiers": {"creator": erased}}, "jurisdiction": "gdpr", "source": "admin"})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert approve(client, admin, request_id).status_code == 200
    plan_approved()
    assert execute_queued("unlearning") == ["completed"]
    request = client.get(f"/v1/erasure-requests/{request_id}", headers=admin).json()
    assert request["status"] == "completed", request.get("status_reason")

    model = client.get("/v1/models/art-ddpm", headers=admin).json()
    assert model["current"] == 2
    origin = model["versions"][1]["origin"]
    assert origin["requested_method"] == "gradient_difference" and origin["method"] in ("gradient_difference", "retrain")
    verification = model["versions"][1]["metrics"]["verification"]
    assert verification["lineage_proof"]["in_new_manifest"] == 0
    assert [c["name"] for c in verification["verdicts"]["checks"]] == IMAGE_CHECKS
    assert client.get("/v1/models/art-ddpm/versions/1/weights", headers=admin).status_code == 410
    assert client.get("/v1/models/art-ddpm/versions/2/weights", headers=admin).status_code == 200
    after = client.post("/v1/models/art-ddpm/sample", json={"n": 2, "seed": 1, "steps": 5}, headers=admin)
    assert after.status_code == 200 and after.json()["version"] == 2

    document = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=admin).json()
    public = client.get("/v1/keys/signing").json()["public_key"]
    assert verify_document(document, public) == (True, "valid")
    assert erased not in str(document)
    body = document["certificate"]
    assert body["datasets"][0]["rows_removed"] == 6
    assert set(IMAGE_CHECKS) <= set(str(body["models"][0]).replace("'", " ").split())
