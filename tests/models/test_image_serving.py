"""Sample and score-images: what the API checks and sends to the inference queue for an image
model, with the worker's answer stood in for (the worker's side is tested with the family)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app import queue
from tests.image_files import image_png
from tests.objects import (
    TINY_DIFFUSION,
    create_dataset,
    create_image_dataset,
    create_text_dataset,
    import_image_model,
    import_language_model,
    import_model,
)


@pytest.fixture
def worker_calls(monkeypatch):
    """The inference queue, answered here: each call's task and arguments are kept."""
    calls: list[tuple[str, dict]] = []

    def answer(task, kwargs, timeout):
        calls.append((task, kwargs))
        if task == queue.SAMPLE:
            return {"images": [base64.b64encode(image_png(np.full((16, 16), i, np.uint8))).decode() for i in range(kwargs["n"])]}
        if task == queue.SCORE_IMAGES:
            return {"losses": [0.5 + i for i in range(len(kwargs["images"]))]}
        raise AssertionError(task)

    monkeypatch.setattr(queue, "call", answer)
    return calls


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def test_sample_and_score_images_are_sent_to_the_inference_queue(client, writer, worker_calls):
    dataset = create_image_dataset(client, writer)
    model = import_image_model(client, writer, dataset["id"])
    r = client.post(f"/v1/models/{model['name']}/sample", json={"n": 3, "seed": 7}, headers=writer)
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["version"], len(r.json()["images"])) == (model["name"], 1, 3)
    task, sent = worker_calls[-1]
    assert task == queue.SAMPLE
    assert (sent["family"], sent["n"], sent["seed"], sent["steps"], sent["label"]) == ("image_diffusion", 3, 7, 10, None)
    assert sent["params"]["block_out_channels"] == [8, 16] and len(sent["weights"]) == 1
    assert sent["shard_records"] == [None]  # an imported version keeps no counts: the worker draws uniformly
    assert client.post(f"/v1/models/{model['name']}/sample", json={"n": 1, "steps": 20}, headers=writer).status_code == 200
    assert worker_calls[-1][1]["steps"] == 20

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Ada Lovelace")
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG")
    r = client.post(f"/v1/models/{model['name']}/score-images", headers=writer,
                    json={"images": [b64(image_png(pixels, pnginfo=text)), b64(jpeg.getvalue())]})
    assert r.status_code == 200, r.text
    assert r.json()["losses"] == [0.5, 1.5]
    task, sent = worker_calls[-1]
    assert task == queue.SCORE_IMAGES and sent["labels"] is None
    # The worker receives plain PNGs of the pixels: nothing of the caller's metadata.
    first = base64.b64decode(sent["images"][0])
    assert b"Lovelace" not in first and Image.open(io.BytesIO(first)).format == "PNG"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(first))), pixels)
    assert Image.open(io.BytesIO(base64.b64decode(sent["images"][1]))).format == "PNG"


def test_bad_sample_and_score_bodies_are_422_and_reach_no_worker(client, writer, settings_env, worker_calls):
    dataset = create_image_dataset(client, writer)
    model = import_image_model(client, writer, dataset["id"])
    sample, score = f"/v1/models/{model['name']}/sample", f"/v1/models/{model['name']}/score-images"
    settings_env(MAX_SAMPLES=4)
    good = b64(image_png(np.zeros((16, 16), np.uint8)))
    cases = [
        (sample, {"n": 5}),
        (sample, {"n": 0}),
        (sample, {"n": 2, "steps": 21}),  # over num_train_timesteps
        (sample, {"n": 2, "label": 0}),  # not a conditional model
        (sample, {"n": 2, "temperature": 1}),
        (score, {"images": [good] * 5}),
        (score, {"images": []}),
        (score, {"images": ["not base64!"]}),
        (score, {"images": [b64(b"not an image")]}),
        (score, {"images": [b64(image_png(np.zeros((8, 8), np.uint8)))]}),  # another size
        (score, {"images": [b64(image_png(np.zeros((16, 16, 3), np.uint8)))]}),  # another channel count
        (score, {"images": [good], "labels": [0]}),
        (score, {"images": [good, good], "labels": [0]}),
    ]
    for path, body in cases:
        r = client.post(path, json=body, headers=writer)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert worker_calls == []


def test_a_conditional_model_takes_labels_of_its_classes(client, writer, worker_calls):
    dataset = create_image_dataset(client, writer)  # classes ink, oil, pencil
    params = {**TINY_DIFFUSION, "conditional": True}
    model = import_image_model(client, writer, dataset["id"], params=params, n_classes=3)
    sample, score = f"/v1/models/{model['name']}/sample", f"/v1/models/{model['name']}/score-images"
    good = b64(image_png(np.zeros((16, 16), np.uint8)))
    assert client.post(sample, json={"n": 2, "label": 3}, headers=writer).status_code == 422
    assert client.post(score, json={"images": [good]}, headers=writer).status_code == 422
    assert client.post(score, json={"images": [good], "labels": [3]}, headers=writer).status_code == 422
    assert worker_calls == []
    assert client.post(sample, json={"n": 2, "label": 2}, headers=writer).status_code == 200
    assert worker_calls[-1][1]["label"] == 2
    assert client.post(score, json={"images": [good, good], "labels": [0, 2]}, headers=writer).status_code == 200
    assert worker_calls[-1][1]["labels"] == [0, 2]


def test_the_inference_budget_bounds_samples_by_images_and_steps(client, writer, settings_env, worker_calls):
    dataset = create_image_dataset(client, writer)
    model = import_image_model(client, writer, dataset["id"])
    sample, score = f"/v1/models/{model['name']}/sample", f"/v1/models/{model['name']}/score-images"
    settings_env(MAX_IMAGE_INFERENCE_FLOPS=1)
    estimates = {}
    for n, steps in ((1, 5), (2, 5), (2, 10)):
        r = client.post(sample, json={"n": n, "steps": steps}, headers=writer)
        assert r.status_code == 422 and "OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS" in r.json()["detail"], r.text
        assert r.json()["max_image_inference_flops"] == 1
        estimates[n, steps] = r.json()["estimated_flops"]
    assert estimates[2, 5] == 2 * estimates[1, 5] and estimates[2, 10] == 2 * estimates[2, 5]
    good = b64(image_png(np.zeros((16, 16), np.uint8)))
    one = client.post(score, json={"images": [good]}, headers=writer)
    three = client.post(score, json={"images": [good] * 3}, headers=writer)
    assert one.status_code == three.status_code == 422
    assert "OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS" in one.json()["detail"]
    assert three.json()["estimated_flops"] == 3 * one.json()["estimated_flops"]
    assert worker_calls == []
    settings_env(MAX_IMAGE_INFERENCE_FLOPS=estimates[2, 5])
    assert client.post(sample, json={"n": 2, "steps": 5}, headers=writer).status_code == 200
    assert client.post(sample, json={"n": 2, "steps": 10}, headers=writer).status_code == 422


def test_the_default_model_samples_under_the_default_bounds_and_more_work_is_a_clear_422(client, writer, worker_calls):
    from app.config import get_settings

    settings = get_settings()
    dataset = create_image_dataset(client, writer)  # 16×16 grey, the default model's images
    model = import_image_model(client, writer, dataset["id"], params={"image_size": 16})  # every other param default
    sample, score = f"/v1/models/{model['name']}/sample", f"/v1/models/{model['name']}/score-images"
    # A new user's calls: the dashboard's grid of 16, and n up to OBLIVIATE_MAX_SAMPLES, at the
    # model's default steps; the other families' bound is far below what they need.
    for n in (1, 16, settings.max_samples):
        r = client.post(sample, json={"n": n, "seed": 0}, headers=writer)
        assert r.status_code == 200, (n, r.text)
        assert len(r.json()["images"]) == n and worker_calls[-1][1]["steps"] == 50
    good = b64(image_png(np.zeros((16, 16), np.uint8)))
    assert client.post(score, json={"images": [good] * settings.max_samples}, headers=writer).status_code == 200
    sent = len(worker_calls)
    # Twice the default steps for as many images is over the image bound: a 422 problem naming
    # the estimate and the bound, and nothing reaches a worker.
    r = client.post(sample, json={"n": settings.max_samples, "steps": 100}, headers=writer)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["estimated_flops"] > problem["max_image_inference_flops"] == settings.max_image_inference_flops
    assert "OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS" in problem["detail"] and "fewer images" in problem["detail"]
    assert len(worker_calls) == sent


def test_image_calls_have_their_own_bound(client, writer, settings_env, worker_calls):
    dataset = create_image_dataset(client, writer)
    model = import_image_model(client, writer, dataset["id"])
    settings_env(MAX_INFERENCE_FLOPS=1)  # the other families' bound no longer decides image calls
    assert client.post(f"/v1/models/{model['name']}/sample", json={"n": 4}, headers=writer).status_code == 200
    settings_env(MAX_INFERENCE_FLOPS=10 * 10**9, MAX_IMAGE_INFERENCE_FLOPS=1)
    assert client.post(f"/v1/models/{model['name']}/sample", json={"n": 4}, headers=writer).status_code == 422


def test_each_family_answers_only_its_own_routes(client, writer, worker_calls):
    images = create_image_dataset(client, writer)
    image_model = import_image_model(client, writer, images["id"])
    classifier = import_model(client, writer, create_dataset(client, writer)["id"])
    language = import_language_model(client, writer, create_text_dataset(client, writer)["id"])
    good = b64(image_png(np.zeros((16, 16), np.uint8)))
    for name in (classifier["name"], language["name"]):
        assert client.post(f"/v1/models/{name}/sample", json={"n": 1}, headers=writer).status_code == 422
        assert client.post(f"/v1/models/{name}/score-images", json={"images": [good]}, headers=writer).status_code == 422
    name = image_model["name"]
    assert client.post(f"/v1/models/{name}/predict", json={"rows": [[0.0]]}, headers=writer).status_code == 422
    assert client.post(f"/v1/models/{name}/generate", json={"prompt": "a"}, headers=writer).status_code == 422
    assert client.post(f"/v1/models/{name}/score", json={"texts": ["a"]}, headers=writer).status_code == 422
    assert worker_calls == []


def test_an_image_model_must_fit_its_dataset(client, writer, settings_env):
    labelled = create_image_dataset(client, writer)
    unlabelled = create_image_dataset(client, writer, name="sketches", with_labels=False)
    tabular = create_dataset(client, writer)

    def create(name, family, dataset, **params):
        return client.post("/v1/models", headers=writer, json={
            "name": name, "family": family, "dataset_id": dataset["dataset_id" if "dataset_id" in dataset else "id"],
            "params": params or None})

    refused = [
        create("a", "image_diffusion", tabular, **TINY_DIFFUSION),
        create("b", "image_diffusion", labelled, **{**TINY_DIFFUSION, "image_size": 32}),
        create("c", "image_diffusion", labelled, **{**TINY_DIFFUSION, "channels": 3}),
        create("d", "image_diffusion", unlabelled, **{**TINY_DIFFUSION, "conditional": True}),
        create("e", "cnn_classifier", labelled),
        create("f", "image_diffusion", labelled, **{**TINY_DIFFUSION, "block_out_channels": [12]}),  # not a multiple of 8
        create("g", "image_diffusion", labelled, **{**TINY_DIFFUSION, "image_size": 15}),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
    method = client.post("/v1/models", headers=writer, json={
        "name": "h", "family": "image_diffusion", "dataset_id": labelled["dataset_id"], "params": TINY_DIFFUSION,
        "unlearning_method": "finetune"})
    assert method.status_code == 422 and "salun" in method.json()["detail"]
    settings_env(MAX_MODEL_PARAMETERS=1000)
    over = create("i", "image_diffusion", labelled, **TINY_DIFFUSION)
    assert over.status_code == 422 and "OBLIVIATE_MAX_MODEL_PARAMETERS" in over.json()["detail"]
    settings_env(MAX_MODEL_PARAMETERS=100_000_000)
    accepted = create("j", "image_diffusion", labelled, **{**TINY_DIFFUSION, "conditional": True})
    assert accepted.status_code == 202, accepted.text


def test_sample_sends_the_shards_records_kept_with_the_version(client, writer, worker_calls):
    import uuid

    from app.db import session_scope
    from app.models import service as model_service

    model = import_image_model(client, writer, create_image_dataset(client, writer)["id"])
    with session_scope() as session:
        version = model_service.get_version(session, model_service.get_model(session, uuid.UUID(model["id"])), 1)
        weights = version.shards[0]["weights"]
        # A SISA version after an erasure emptied its second shard.
        version.shards = [{"shard": 0, "weights": weights, "checkpoints": [], "records": 40},
                          {"shard": 1, "weights": weights, "checkpoints": [], "records": 0}]
    r = client.post(f"/v1/models/{model['name']}/sample", json={"n": 2, "seed": 1}, headers=writer)
    assert r.status_code == 200, r.text
    task, sent = worker_calls[-1]
    assert task == queue.SAMPLE and sent["shard_records"] == [40, 0] and len(sent["weights"]) == 2
