"""Predictions run on an inference worker (the `inference` queue) and answer through the result
backend; no worker in time is a 503 with Retry-After. Imported weights are checked from their
safetensors header, against the tensor shapes the API computes without torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.objects import create_dataset, import_model, logistic_weights

ROWS = [[float((i * 7 + j) % 17) for j in range(64)] for i in range(5)]


def _import(client, headers, dataset, weights: bytes, name: str = "checked", family: str = "logistic_regression", params=None):
    metadata = {"name": name, "family": family, "dataset_version_id": dataset["id"], "record_ids": list(range(50)),
                "params": params or {}}
    return client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("w.safetensors", weights, "application/octet-stream")}, headers=headers,
    )


def test_a_prediction_comes_from_the_worker_and_matches_the_network(client, writer, inference_worker):
    import torch

    from app.families.registry import get_family
    from workers.engine.families.base import Shape
    from workers.engine.serialization import load_network

    dataset = create_dataset(client, writer)
    model = import_model(client, writer, dataset["id"])
    response = client.post(f"/v1/models/{model['name']}/predict", json={"rows": ROWS}, headers=writer)
    assert response.status_code == 200, response.text
    spec = get_family("logistic_regression")
    network = load_network(spec.load_implementation(), spec.parse_params({}), Shape(64, 10), logistic_weights())
    with torch.no_grad():
        expected = torch.softmax(network(torch.tensor(ROWS)), dim=1).tolist()
    got = response.json()["probabilities"]
    assert len(got) == len(ROWS)
    assert max(abs(a - b) for row_a, row_b in zip(got, expected) for a, b in zip(row_a, row_b)) < 1e-5
    assert "predict" in inference_worker.log()


def test_no_inference_worker_is_a_503_with_retry_after_within_the_timeout(client, writer, settings_env, tmp_path):
    dataset = create_dataset(client, writer)
    model = import_model(client, writer, dataset["id"])
    # A broker and result backend that no worker consumes, on either pass.
    settings_env(INFERENCE_TIMEOUT_SECONDS=1, BROKER_URL=f"sqla+sqlite:///{tmp_path / 'idle.db'}",
                 RESULT_BACKEND_URL=f"db+sqlite:///{tmp_path / 'idle-results.db'}")
    response = client.post(f"/v1/models/{model['name']}/predict", json={"rows": ROWS}, headers=writer)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert "No inference worker answered within 1 s" in response.json()["detail"]


def test_a_supervised_worker_that_is_down_is_a_503_at_once(client, writer):
    from app.health import supervision

    dataset = create_dataset(client, writer)
    model = import_model(client, writer, dataset["id"])
    supervision.supervise(lambda: False)
    try:
        response = client.post(f"/v1/models/{model['name']}/predict", json={"rows": ROWS}, headers=writer)
    finally:
        supervision.supervise(None)
    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    assert response.json()["detail"].startswith("No inference worker is running")


def test_messages_and_answers_are_json_only():
    from app import queue

    conf = queue.make_celery().conf
    assert (conf.task_serializer, conf.result_serializer) == ("json", "json")
    assert list(conf.accept_content) == ["json"] and list(conf.result_accept_content) == ["json"]
    assert conf.task_routes[queue.PREDICT] == {"queue": "inference"}


@pytest.mark.parametrize("broker, backend", [
    ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),
    ("sqla+postgresql://u@127.0.0.1/db", "db+postgresql://u@127.0.0.1/db"),
])
def test_the_result_backend_follows_the_broker(monkeypatch, broker, backend):
    from app.config import Settings

    monkeypatch.setenv("OBLIVIATE_BROKER_URL", broker)
    monkeypatch.delenv("OBLIVIATE_RESULT_BACKEND_URL", raising=False)
    assert Settings().result_backend_url == backend


def test_the_embedded_result_backend_is_a_file_of_its_own(monkeypatch, tmp_path):
    from app.config import Settings

    for name in ("OBLIVIATE_BROKER_URL", "OBLIVIATE_RESULT_BACKEND_URL", "OBLIVIATE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OBLIVIATE_DATA_DIR", str(tmp_path))
    assert Settings().result_backend_url == f"db+sqlite:///{(tmp_path / 'results.db').resolve()}"


def test_serve_and_the_test_worker_consume_the_inference_queue():
    from app.cli.serve import worker_command
    from app.config import Settings
    from tests.worker import Worker

    command = worker_command(Settings())
    assert "inference" in command[command.index("-Q") + 1].split(",")
    assert "inference" in Worker(Path("unused.log")).queues.split(",")


@pytest.mark.parametrize("family, params", [
    ("logistic_regression", {}),
    ("mlp_classifier", {"hidden": [32, 16]}),
    ("mlp_classifier", {"hidden": [8], "dropout": 0.2}),
    ("cnn_classifier", {"channels": [4, 8]}),
    ("cnn_classifier", {"image_shape": [1, 2, 32], "channels": [3, 3, 3]}),
])
def test_the_torch_free_shapes_are_those_of_the_real_network(family, params):
    from app.families.registry import get_family
    from workers.engine.families.base import Shape

    spec = get_family(family)
    config = spec.parse_params(params)
    network = spec.load_implementation().build_network(config, Shape(64, 10))
    real = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    assert spec.parameter_shapes(config, 64, 10) == real


def _header_file(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize("label, weights", [
    ("not safetensors", b"\x00" * 64),
    ("empty", b""),
    ("header past the end", struct.pack("<Q", 10**6) + b"{}"),
    ("not JSON", struct.pack("<Q", 4) + b"\xff\xfe{]"),
    ("integer tensors", _header_file({"weight": {"dtype": "I32", "shape": [10, 64], "data_offsets": [0, 2560]},
                                      "bias": {"dtype": "F32", "shape": [10], "data_offsets": [2560, 2600]}}, b"\x00" * 2600)),
    ("size does not match", _header_file({"weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 16]}}, b"\x00" * 16)),
    ("wrong shape", _header_file({"weight": {"dtype": "F32", "shape": [10, 63], "data_offsets": [0, 2520]},
                                  "bias": {"dtype": "F32", "shape": [10], "data_offsets": [2520, 2560]}}, b"\x00" * 2560)),
    ("missing bias", _header_file({"weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]}}, b"\x00" * 2560)),
    ("trailing bytes", logistic_weights() + b"\x00\x00\x00\x00"),
])
def test_weights_that_do_not_fit_are_422_at_import(client, writer, label, weights):
    dataset = create_dataset(client, writer)
    response = _import(client, writer, dataset, weights)
    assert response.status_code == 422, (label, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")


def test_weights_of_another_family_are_422_and_fitting_ones_201(client, writer):
    dataset = create_dataset(client, writer)
    assert _import(client, writer, dataset, logistic_weights(), family="mlp_classifier").status_code == 422
    assert _import(client, writer, dataset, logistic_weights()).status_code == 201
