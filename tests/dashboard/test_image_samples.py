"""The model page's grid of samples for an image model: drawn on the inference worker (stood in
for here), kept with the version, replaced by a new draw, and destroyed with the weights."""

from __future__ import annotations

import base64
import io
import uuid

import numpy as np
import pytest
from PIL import Image

from app import queue
from app.artifacts.store import get_store
from app.db import session_scope
from app.models import service as model_service
from app.models.models import ModelVersion
from app.unlearning import service as unlearning_service
from tests.dashboard.helpers import csrf_of, new_key, sign_in
from tests.image_files import image_png
from tests.objects import TINY_DIFFUSION, create_dataset, create_image_dataset, import_image_model, import_model
from workers import destruction


@pytest.fixture
def drawn(monkeypatch):
    """The inference queue, answered here with images of one grey level per draw."""
    draws: list[dict] = []

    def answer(task, kwargs, timeout):
        assert task == queue.SAMPLE
        draws.append(kwargs)
        level = 40 * len(draws)
        png = image_png(np.full((16, 16), level, np.uint8))
        return {"images": [base64.b64encode(png).decode()] * kwargs["n"]}

    monkeypatch.setattr(queue, "call", answer)
    return draws


def grid_of(version_id: uuid.UUID) -> str | None:
    with session_scope() as session:
        return session.get(ModelVersion, version_id).sample_grid_sha256


def test_the_model_page_draws_a_grid_that_is_destroyed_with_the_weights(client, writer, drawn):
    dataset = create_image_dataset(client, writer)
    model = import_image_model(client, writer, dataset["id"])
    name = model["name"]
    sign_in(client, new_key("models:read"))
    assert "<dd>images</dd>" in client.get(f"/admin/datasets/{dataset['dataset_id']}").text
    assert "16×16, 1 channel<" in client.get(f"/admin/datasets/{dataset['dataset_id']}").text
    page = client.get(f"/admin/models/{name}").text
    assert "Samples" in page and "No samples drawn from version 1 yet." in page and "samples.png" not in page
    assert client.get(f"/admin/models/{name}/versions/1/samples.png").status_code == 404

    response = client.post(f"/admin/models/{name}/samples", data={"csrf_token": csrf_of(client, f"/admin/models/{name}")},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/models/{name}"
    assert (drawn[-1]["n"], drawn[-1]["seed"], drawn[-1]["steps"], drawn[-1]["label"]) == (16, 0, 10, None)
    assert f"/admin/models/{name}/versions/1/samples.png" in client.get(f"/admin/models/{name}").text
    image = client.get(f"/admin/models/{name}/versions/1/samples.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(image.content))
    assert grid.size == (4 * 18 + 2, 4 * 18 + 2)  # 16 tiles of 16 pixels, 2 apart
    assert grid.getpixel((2, 2)) == (40, 40, 40) and grid.getpixel((0, 0)) == (255, 255, 255)

    with session_scope() as session:
        version_id = model_service.get_version(session, model_service.get_model(session, uuid.UUID(model["id"])), 1).id
    first = grid_of(version_id)
    # A new draw replaces the grid; the old one's bytes are scheduled and go.
    client.post(f"/admin/models/{name}/samples", data={"csrf_token": csrf_of(client, f"/admin/models/{name}")})
    second = grid_of(version_id)
    assert second not in (None, first)
    destruction.purge()
    assert not get_store().exists(first) and get_store().exists(second)

    # The erasure's destruction of the version takes the grid with the weights.
    with session_scope() as session:
        candidates = model_service.mark_versions_destroyed(session, [session.get(ModelVersion, version_id)])
        removed = unlearning_service.schedule_unreferenced(session, candidates)
    assert second in candidates and second in removed
    destruction.purge(removed)
    assert not get_store().exists(second)
    assert client.get(f"/admin/models/{name}/versions/1/samples.png").status_code == 410


def test_the_grid_draws_as_many_images_as_the_inference_bound_allows(client, writer, settings_env, drawn):
    from app.models import inference_budget

    model = import_image_model(client, writer, create_image_dataset(client, writer)["id"])
    name = model["name"]
    loaded = {"family": "image_diffusion", "params": TINY_DIFFUSION, "shape": {"n_features": 256, "n_classes": 3},
              "weights": ["w"]}
    per_image = 2 * inference_budget.parameters(loaded) * inference_budget.sample_positions(loaded, 1, 10)
    settings_env(MAX_IMAGE_INFERENCE_FLOPS=str(5 * per_image + 1))
    sign_in(client, new_key("models:read"))
    client.post(f"/admin/models/{name}/samples", data={"csrf_token": csrf_of(client, f"/admin/models/{name}")})
    assert drawn[-1]["n"] == 5
    image = Image.open(io.BytesIO(client.get(f"/admin/models/{name}/versions/1/samples.png").content))
    assert image.size == (3 * 18 + 2, 2 * 18 + 2)  # five tiles in rows of three


def test_the_default_model_draws_the_whole_grid_under_the_default_bounds(client, writer, drawn):
    model = import_image_model(client, writer, create_image_dataset(client, writer)["id"], name="default-ddpm",
                               params={"image_size": 16})  # every other param the family's default
    sign_in(client, new_key("models:read"))
    name = model["name"]
    client.post(f"/admin/models/{name}/samples", data={"csrf_token": csrf_of(client, f"/admin/models/{name}")})
    assert (drawn[-1]["n"], drawn[-1]["steps"]) == (16, 50)
    image = Image.open(io.BytesIO(client.get(f"/admin/models/{name}/versions/1/samples.png").content))
    assert image.size == (4 * 18 + 2, 4 * 18 + 2)


def test_only_image_models_draw_samples(client, writer, drawn):
    classifier = import_model(client, writer, create_dataset(client, writer)["id"])
    sign_in(client, new_key("models:read"))
    page = client.get(f"/admin/models/{classifier['name']}").text
    assert "Draw samples" not in page
    token = csrf_of(client, f"/admin/models/{classifier['name']}")
    assert client.post(f"/admin/models/{classifier['name']}/samples", data={"csrf_token": token}).status_code == 422
    assert client.post(f"/admin/models/{classifier['name']}/samples", data={"csrf_token": "forged"}).status_code == 403
    assert drawn == []


def test_the_request_page_shows_the_samples_of_the_version_after_the_erasure(client, writer, drawn):
    from app.db import utcnow
    from app.jobs.models import Job, JobRequest
    from tests.dashboard.helpers import new_request

    model = import_image_model(client, writer, create_image_dataset(client, writer)["id"])
    name = model["name"]
    request_id = new_request(client, new_key())
    with session_scope() as session:
        job = Job(id=uuid.uuid4(), client="acme", kind="unlearning", status="completed", model_id=uuid.UUID(model["id"]),
                  payload={}, attempt=1, max_attempts=5, created_at=utcnow(), finished_at=utcnow(),
                  result={"model": {"model": name, "method": "retrain", "version_before": 1, "version_after": 1}})
        session.add(job)
        session.flush()
        session.add(JobRequest(job_id=job.id, request_id=uuid.UUID(request_id), added_at=utcnow()))
    sign_in(client, new_key("requests:read,models:read"))
    page = client.get(f"/admin/requests/{request_id}").text
    assert "Samples after the erasure" in page and f"{name} version 1: no samples drawn yet" in page
    client.post(f"/admin/models/{name}/samples", data={"csrf_token": csrf_of(client, f"/admin/models/{name}")})
    page = client.get(f"/admin/requests/{request_id}").text
    assert f'src="/admin/models/{name}/versions/1/samples.png"' in page and "no samples drawn yet" not in page
