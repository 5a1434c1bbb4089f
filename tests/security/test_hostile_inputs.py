"""Inputs that crashed the service into a 500 (issue 20, items 9 and 10): they answer 422 now,
checked before any work is done.

Before: `generate` with temperature 1e-300 or 5e-324 reached the worker, which divided the
logits by it (inf, then NaN) and answered 500; a safetensors header nested 100,000 deep made
the JSON parser raise RecursionError, a 500.
"""

from __future__ import annotations

import json
import struct

import pytest
from pydantic import ValidationError

from app.models.schemas import MIN_TEMPERATURE, GenerateBody
from app.models.weights import MAX_HEADER_DEPTH, WeightsError, read_header
from tests.objects import create_dataset

SCOPES = "models:write,models:read,requests:review"


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, MIN_TEMPERATURE / 2])
def test_a_temperature_below_the_minimum_is_refused_by_the_schema(client, make_key, temperature):
    with pytest.raises(ValidationError, match="temperature"):
        GenerateBody(prompt="ok", temperature=temperature)
    # Refused while the body is read, before the model is even looked up: no worker is asked.
    response = client.post("/v1/models/no-such-model/generate", json={"prompt": "ok", "temperature": temperature},
                           headers=make_key(SCOPES))
    assert response.status_code == 422, response.text
    assert "temperature" in response.text


@pytest.mark.parametrize("temperature", [0.0, MIN_TEMPERATURE, 1.0])
def test_greedy_and_ordinary_temperatures_pass(temperature):
    assert GenerateBody(prompt="ok", temperature=temperature).temperature == temperature


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _nested(depth: int) -> bytes:
    return b'{"w": ' + b"[" * depth + b"]" * depth + b"}"


def test_a_header_nested_100k_deep_is_refused_without_parsing():
    with pytest.raises(WeightsError, match="nests deeper"):
        read_header(_safetensors(_nested(100_000)))
    # Brackets inside strings are text, not nesting.
    header = json.dumps({"__metadata__": {"note": "[[[[[[[[[[[[[[[[[[[[" * 10}}).encode()
    assert read_header(_safetensors(header)) == {}
    with pytest.raises(WeightsError, match="nests deeper"):
        read_header(_safetensors(_nested(MAX_HEADER_DEPTH)))


def test_an_import_with_a_deeply_nested_header_answers_422(client, make_key):
    headers = make_key(SCOPES)
    version_id = create_dataset(client, headers)["id"]
    metadata = {"name": "nested", "family": "logistic_regression", "dataset_version_id": version_id, "record_ids": [0]}
    files = {"weights": ("w.safetensors", _safetensors(_nested(100_000)), "application/octet-stream")}
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)}, files=files, headers=headers)
    assert response.status_code == 422, response.text
    assert "nests deeper" in response.json()["detail"]
