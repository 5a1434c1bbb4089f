"""schemathesis against the app's own OpenAPI schema: every operation, positive and negative
inputs, with an admin key so that authorisation passes. No response is a server error, and every
response (status code, content type, body) is what the schema documents.

`bench/fuzz.sh` runs the same checks with many more examples against a running server.
"""

from __future__ import annotations

import logging
import os
import zlib
from contextlib import contextmanager

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import TEST_SECRET
from tests.objects import create_dataset, create_request, import_model, request_body

EXAMPLES = int(os.environ.get("OBLIVIATE_FUZZ_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance, response_headers_conformance,
]


@pytest.fixture
def admin_headers(make_key):
    return make_key("admin", client="fuzz")


@contextmanager
def _collection_env():
    """The schema is read at collection time, before the test database exists: building the app
    then must not create an embedded secret file anywhere, nor leave logging configured."""
    from app.config import reset_settings

    saved = os.environ.get("OBLIVIATE_SECRET_KEY")
    handlers, level = logging.root.handlers[:], logging.root.level
    os.environ["OBLIVIATE_SECRET_KEY"] = saved or TEST_SECRET
    reset_settings()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OBLIVIATE_SECRET_KEY", None)
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
        reset_settings()


def _openapi() -> dict:
    from app.main import create_app

    with _collection_env():
        return create_app().openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def seeded(client, admin_headers, inference_worker) -> dict:
    """Real objects, so that lists answer with bodies worth checking, and path parameters that
    name something that exists (see `test_api_conforms_to_its_schema`)."""
    requests = [create_request(client, admin_headers)["id"] for _ in range(3)]
    dataset = create_dataset(client, admin_headers)
    model = import_model(client, admin_headers, dataset["id"])
    training = client.post(
        "/v1/models", headers=admin_headers,
        json={"name": "fuzz-queued", "family": "logistic_regression", "dataset_id": dataset["dataset_id"]},
    )
    assert training.status_code == 202, training.text
    return {
        "request_id": requests, "dataset_id": [dataset["dataset_id"], dataset["id"]], "name": [model["name"]],
        "version": [1], "job_id": [training.json()["id"]],
    }


# Path parameters that name an object, and those that pick something inside it.
OBJECT_PARAMETERS = ("request_id", "job_id", "dataset_id", "name")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, app, admin_headers, seeded):
    response = case.call(app=app, headers=admin_headers)
    case.validate_response(response, checks=CHECKS, headers=admin_headers)
    # Generated ids almost never exist: send the same query and body again to real objects, so
    # that transitions, downloads and predictions run on data that is there; once with every path
    # parameter real, and once with only the object real (e.g. a real model, a generated version).
    generated = dict(case.path_parameters or {})
    real = {name: seeded[name][zlib.crc32(str(value).encode()) % len(seeded[name])]
            for name, value in generated.items() if name in seeded}
    substitutions = [real] if real else []
    objects_only = {name: value for name, value in real.items() if name in OBJECT_PARAMETERS}
    if objects_only and objects_only != real:
        substitutions.append(objects_only)
    for substitution in substitutions:
        case.path_parameters = {**generated, **substitution}
        response = case.call(app=app, headers=admin_headers)
        case.validate_response(response, checks=CHECKS, headers=admin_headers)


def test_the_schema_documents_every_error_as_problem_json(app):
    document = app.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            for code, response in responses.items():
                if int(code) >= 400 and path != "/readyz":
                    assert response["content"] == problem, (label, code)
            if path.startswith("/v1/") and path not in ("/v1/keys/signing", "/v1/certificates/keys"):  # public keys
                assert operation["security"] == [{"bearer": []}], label
                assert {"401", "403"} <= set(responses), label
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(responses), label
            if "{" in path:
                assert {"404", "422"} <= set(responses), label
            if "429" in responses:
                assert "Retry-After" in responses["429"]["headers"], label


# What fuzzing found, kept as plain regressions (each was a 500, or a body the schema does not allow).

def test_a_version_past_the_databases_integers_is_422(client, admin_headers, seeded):
    for version in (2**31, 2**70, -(2**70), 0):
        response = client.get(f"/v1/models/digits-lr/versions/{version}/weights", headers=admin_headers)
        assert response.status_code == 422, (version, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_a_model_name_that_cannot_exist_is_422(client, admin_headers):
    for name in ("a%00b", "-leading-dash", "x" * 101, "sp%20ace"):
        response = client.get(f"/v1/models/{name}", headers=admin_headers)
        assert response.status_code == 422, (name, response.text)


def test_record_ids_past_int64_are_422(client, admin_headers, seeded):
    import json

    from tests.objects import logistic_weights

    dataset = client.get(f"/v1/datasets/{seeded['dataset_id'][0]}", headers=admin_headers).json()
    metadata = {"name": "huge-ids", "family": "logistic_regression", "dataset_version_id": dataset["versions"][0]["id"],
                "record_ids": [2**70]}
    response = client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("w.safetensors", logistic_weights(), "application/octet-stream")}, headers=admin_headers,
    )
    assert response.status_code == 422, response.text


def test_predictions_are_finite_or_refused(client, admin_headers, seeded):
    url = "/v1/models/digits-lr/predict"
    too_large = client.post(url, json={"rows": [[1e308] * 64]}, headers=admin_headers)
    assert too_large.status_code == 422, too_large.text
    # Within float32 but enough to overflow the network's sums: refused, never NaN (null) sent back.
    overflowing = client.post(url, json={"rows": [[3e38] * 64, [-3e38] * 64, [0.5] * 64]}, headers=admin_headers)
    if overflowing.status_code == 200:
        assert all(isinstance(p, float) for row in overflowing.json()["probabilities"] for p in row)
    else:
        assert overflowing.status_code == 422 and overflowing.json()["detail"].startswith("Row ")


@pytest.mark.parametrize("route, body", [
    ("/v1/erasure-requests", {"subject": {"identifiers": {"user_id": "nul"}}, "jurisdiction": "gdpr",
                              "source": "portal", "reason": "a\x00b"}),
    ("/v1/erasure-requests/{id}/hold", {"reason": "a\x00b"}),
    ("/v1/erasure-requests/{id}/deny", {"reason": "a\x00b"}),
    ("/v1/erasure-requests/{id}/cancel", {"reason": "a\x00b"}),
    ("/v1/erasure-requests/{id}/extend", {"days": 3, "reason": "a\x00b"}),
])
def test_text_with_a_nul_character_is_422(client, admin_headers, seeded, route, body):
    response = client.post(route.format(id=seeded["request_id"][0]), json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert "\x00" not in response.text and "\\u0000" not in response.text


def test_a_batch_item_with_a_nul_character_is_refused_alone(client, admin_headers):
    good = request_body(identifiers={"email": "nul-batch@example.org"})
    response = client.post("/v1/erasure-requests/batch", json=[{**good, "reason": "\x00"}, good], headers=admin_headers)
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["items"]] == [422, 201]


@pytest.mark.parametrize("route, template", [
    ("/v1/erasure-requests",
     b'{"subject": {"identifiers": {"user_id": "%s"}}, "jurisdiction": "gdpr", "source": "portal"}'),
    ("/v1/subjects/lookup", b'{"identifiers": {"email": "%s@example.org"}}'),
])
def test_an_identifier_with_a_lone_surrogate_is_422(client, admin_headers, route, template):
    for escape in (b"\\ud800", b"x\\udc00y"):
        headers = {**admin_headers, "Content-Type": "application/json"}
        response = client.post(route, content=template % escape, headers=headers)
        assert response.status_code == 422, (escape, response.text)


def test_hostile_inputs_are_refused_and_not_echoed(client, admin_headers):
    """Internal callback URLs in every spelling, identifiers as field names, external ids and
    disguised in reasons (tests/system/hostile.py; bench/fuzz.sh sends many more to a live server)."""
    from tests.system.hostile import cases

    for label, body, secret in cases(max(EXAMPLES, 50), seed=EXAMPLES):
        response = client.post("/v1/erasure-requests", json=body, headers=admin_headers)
        assert response.status_code == 422, (label, body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert secret.lower() not in response.text.lower(), (label, response.text)


def test_hostile_endpoint_inputs_answer_as_expected(client, make_key):
    """Inputs to other endpoints that once answered 500 or were accepted (issue 20, items 1, 9, 10,
    13; bench/fuzz.sh sends them to a live server too)."""
    from tests.system.hostile import endpoint_cases

    headers = make_key("admin,models:write,models:read", client="fuzz")
    created = create_dataset(client, headers)
    for label, method, path, arguments, expected in endpoint_cases(created["id"], created["dataset_id"]):
        response = client.request(method, path, headers=headers, **arguments)
        assert response.status_code == expected, (label, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), label
