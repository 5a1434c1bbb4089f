"""POST /v1/erasure-requests/batch: per-item results in input order, partial failure, limits."""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests import objects
from tests.factories import request_count

URL = "/v1/erasure-requests"
BATCH = f"{URL}/batch"


request_body = partial(objects.request_body, "batch", jurisdiction="ccpa", source="batch")


def assert_item_problem(item):
    assert item["result"] == "error"
    assert item["status"] == 422
    assert item.get("request") is None
    problem = item["problem"]
    assert problem["status"] == 422
    assert {"type", "title", "detail"} <= set(problem)


def test_mixed_batch_reports_each_item_in_input_order(client, headers):
    # A repeated external_id with the same subject is "existing"; another subject would be a 409.
    pre_existing = request_body(external_id="pre-existing")
    repeated = request_body(external_id="b-1")
    before = client.post(URL, json=pre_existing, headers=headers).json()
    items = [
        repeated,
        request_body(jurisdiction="mars"),
        request_body(),
        repeated,
        42,
        pre_existing,
        request_body(subject={"identifiers": {}}),
        "not an object",
        request_body(unexpected="field"),
        request_body(source="admin", identity_verified=True),
    ]
    response = client.post(BATCH, json=items, headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [i["index"] for i in result["items"]] == list(range(len(items)))
    assert [i["result"] for i in result["items"]] == [
        "created", "error", "created", "existing", "error", "existing", "error", "error", "error", "created",
    ]
    assert (result["created"], result["existing"], result["errors"]) == (3, 2, 5)

    by_index = result["items"]
    for index in (1, 4, 6, 7, 8):
        assert_item_problem(by_index[index])
    for index in (0, 2, 9):
        assert by_index[index]["status"] == 201
    assert by_index[3]["status"] == by_index[5]["status"] == 200
    assert by_index[3]["request"]["id"] == by_index[0]["request"]["id"]
    assert by_index[5]["request"]["id"] == before["id"]
    assert by_index[9]["request"]["source"] == "admin"
    assert by_index[0]["request"]["jurisdiction"] == "ccpa"

    assert request_count() == 4
    for index in (0, 2, 9):
        rid = by_index[index]["request"]["id"]
        fetched = client.get(f"{URL}/{rid}", headers=headers)
        assert fetched.status_code == 200 and fetched.json()["status"] == "received"
        assert client.get(f"{URL}/{rid}/audit", headers=headers).json()["chain_valid"] is True


def test_batch_items_follow_the_auto_approve_policy(client, headers, settings_env):
    settings_env(AUTO_APPROVE_VERIFIED="true")
    items = [request_body(identity_verified=True), request_body()]
    result = client.post(BATCH, json=items, headers=headers).json()
    assert [i["request"]["status"] for i in result["items"]] == ["approved", "received"]


def test_batch_over_1000_items_is_refused_whole(client, headers):
    items = [request_body() for _ in range(1001)]
    response = client.post(BATCH, json=items, headers=headers)
    assert response.status_code in (413, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == response.status_code
    assert request_count() == 0


def test_batch_limit_is_inclusive(client, headers, settings_env):
    settings_env(MAX_BATCH_ITEMS="4")
    assert client.post(BATCH, json=[request_body() for _ in range(4)], headers=headers).json()["created"] == 4
    refused = client.post(BATCH, json=[request_body() for _ in range(5)], headers=headers)
    assert refused.status_code in (413, 422)
    assert request_count() == 4


@pytest.mark.parametrize("body", [{"items": []}, "text", 12, None])
def test_batch_body_must_be_a_list(client, headers, body):
    response = client.post(BATCH, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_empty_batch_creates_nothing(client, headers):
    response = client.post(BATCH, json=[], headers=headers)
    assert response.status_code == 200
    assert response.json() == {"items": [], "created": 0, "existing": 0, "errors": 0}


def test_batch_item_with_a_non_standard_number_is_an_item_error(client, headers):
    # NaN is not JSON, but Python's parser accepts it: it must not break the batch or its key.
    content = json.dumps([request_body(), {**request_body(), "reason": float("nan")}])
    assert "NaN" in content
    for extra in ({}, {"Idempotency-Key": "nan-batch"}):
        response = client.post(BATCH, content=content, headers={**headers, **extra, "Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert [i["result"] for i in response.json()["items"]] == ["created", "error"]
    assert request_count() == 2
