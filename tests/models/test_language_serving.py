"""Generate and score: a language model's current version answers on the inference worker, with
limits on prompts, texts and new tokens, and the family's data kind enforced."""

from __future__ import annotations

import json
import math

import pytest

from tests.objects import (
    TINY_LM,
    create_dataset,
    create_text_dataset,
    import_language_model,
    import_model,
    lm_weights,
)
from tests.text_files import csv_bytes, notes_table

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained_state():
    """A tiny model trained here on the notes, so its answers are not those of random weights."""
    import torch

    from app.families.registry import get_family
    from workers.engine.families.causal_lm import record_windows
    from workers.engine.training import train_single

    spec = get_family("causal_lm")
    family, config = spec.load_implementation(), spec.parse_params(TINY_LM)
    texts = notes_table(subjects=20, per_subject=3, canaries={4: 4}).column("text").to_pylist()
    windows, owners = record_windows(texts, config.block_size)
    return train_single(family, config, family.shape(config), torch.from_numpy(windows), torch.from_numpy(owners),
                        seed=0, device=torch.device("cpu"))


def _network(state):
    from app.families.registry import get_family
    from workers.engine.training import new_network

    spec = get_family("causal_lm")
    family, config = spec.load_implementation(), spec.parse_params(TINY_LM)
    network = new_network(family, config, family.shape(config), 0)
    network.load_state_dict(state)
    return network.eval()


def test_generate_and_score_answer_from_the_worker_like_the_network(client, writer, inference_worker, trained_state):
    from workers.engine.families.lm_scoring import generate, score

    dataset = create_text_dataset(client, writer, content=csv_bytes(notes_table(subjects=20, per_subject=3, canaries={4: 4})))
    model = import_language_model(client, writer, dataset["id"], weights=lm_weights(state=trained_state))
    network = _network(trained_state)
    body = {"prompt": "user004 wrote that the ", "max_new_tokens": 24, "temperature": 0, "seed": 0}
    response = client.post(f"/v1/models/{model['name']}/generate", json=body, headers=writer)
    assert response.status_code == 200, response.text
    expected = generate([network], body["prompt"], 24, 64)
    assert response.json() == {"model": "notes-lm", "version": 1, "text": expected}
    assert not response.json()["text"].startswith(body["prompt"]) and len(expected) > 0
    sampled = [client.post(f"/v1/models/{model['name']}/generate", headers=writer,
                           json={**body, "temperature": 1.0, "seed": 7}).json()["text"] for _ in range(2)]
    assert sampled[0] == sampled[1]

    texts = ["ticket from user004: the lamp is broken.", "zzzz qqqq", "é" * 40, ""]
    response = client.post(f"/v1/models/{model['name']}/score", json={"texts": texts}, headers=writer)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert [s["tokens"] for s in scores] == [40, 9, 80, 0]
    for got, want in zip(scores, score([network], texts, 64), strict=True):
        assert math.isclose(got["log_likelihood"], want["log_likelihood"], rel_tol=1e-5, abs_tol=1e-6)
    # The model read the notes: a note scores far above noise of the same length.
    assert scores[0]["log_likelihood"] / 40 > scores[1]["log_likelihood"] / 9 + 1


def test_limits_and_bad_bodies(client, writer, settings_env, inference_worker):
    dataset = create_text_dataset(client, writer)
    model = import_language_model(client, writer, dataset["id"])
    generate, score = f"/v1/models/{model['name']}/generate", f"/v1/models/{model['name']}/score"
    settings_env(MAX_PROMPT_BYTES=20, MAX_NEW_TOKENS=8, MAX_PREDICT_ROWS=3)
    cases = [
        (generate, {"prompt": "x" * 21}, 413),
        (generate, {"prompt": "é" * 11}, 413),  # 22 bytes
        (generate, {"prompt": "ok", "max_new_tokens": 9}, 422),
        (generate, {"prompt": "ok", "max_new_tokens": 0}, 422),
        (generate, {"prompt": "ok", "temperature": -1}, 422),
        (generate, {"prompt": "ok", "top_k": 3}, 422),
        (generate, {"prompt": 3}, 422),
        (score, {"texts": ["a", "b", "c", "d"]}, 413),
        (score, {"texts": ["y" * 21]}, 413),
        (score, {"texts": []}, 422),
        (score, {"texts": "one text"}, 422),
    ]
    for path, body, status in cases:
        response = client.post(path, json=body, headers=writer)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    # A lone surrogate is not text (it has no UTF-8 form).
    raw = b'{"prompt": "\\ud800"}'
    response = client.post(generate, content=raw, headers={**writer, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert client.post(generate, json={"prompt": "ok", "max_new_tokens": 8}, headers=writer).status_code == 200


def test_families_and_datasets_must_be_of_one_kind(client, writer, make_key, inference_worker):
    tabular = create_dataset(client, writer)
    text = create_text_dataset(client, writer)
    classifier = import_model(client, writer, tabular["id"])
    language = import_language_model(client, writer, text["id"])
    assert client.post(f"/v1/models/{classifier['name']}/generate", json={"prompt": "a"}, headers=writer).status_code == 422
    assert client.post(f"/v1/models/{classifier['name']}/score", json={"texts": ["a"]}, headers=writer).status_code == 422
    assert client.post(f"/v1/models/{language['name']}/predict", json={"rows": [[0.0]]}, headers=writer).status_code == 422
    for family, dataset in (("causal_lm", tabular), ("mlp_classifier", text)):
        response = client.post("/v1/models", json={"name": f"x-{family}", "family": family, "dataset_id": dataset["id"]},
                               headers=writer)
        assert response.status_code == 422 and "datasets" in response.json()["detail"], response.text
    for method in ("finetune", "certified_newton"):
        response = client.post("/v1/models", headers=writer, json={
            "name": "lm-m", "family": "causal_lm", "dataset_id": text["id"], "unlearning_method": method})
        assert response.status_code == 422, response.text
    response = client.post("/v1/models", headers=writer, json={
        "name": "mlp-npo", "family": "mlp_classifier", "dataset_id": tabular["id"], "unlearning_method": "npo"})
    assert response.status_code == 422
    metadata = {"name": "lm-on-digits", "family": "causal_lm", "dataset_version_id": tabular["id"],
                "record_ids": [0, 1], "params": TINY_LM}
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                           files={"weights": ("w", lm_weights(), "application/octet-stream")}, headers=writer)
    assert response.status_code == 422
    # Weights of another size than the params say are refused from their header.
    metadata = {**metadata, "name": "lm-misfit", "dataset_version_id": text["id"], "params": {**TINY_LM, "n_embd": 64}}
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                           files={"weights": ("w", lm_weights(), "application/octet-stream")}, headers=writer)
    assert response.status_code == 422
    reader_without_scope = make_key("requests:read")
    assert client.post(f"/v1/models/{language['name']}/score", json={"texts": ["a"]},
                       headers=reader_without_scope).status_code == 403
