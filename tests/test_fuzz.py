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
from tests.objects import create_dataset, create_request, import_model

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
def seeded(client, admin_headers) -> dict:
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


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, app, admin_headers, seeded):
    response = case.call(app=app, headers=admin_headers)
    case.validate_response(response, checks=CHECKS, headers=admin_headers)
    # Generated ids almost never exist: send the same query and body once more to real objects,
    # so that transitions, downloads and predictions run on data that is there.
    real = {name: seeded[name][zlib.crc32(str(value).encode()) % len(seeded[name])]
            for name, value in (case.path_parameters or {}).items() if name in seeded}
    if real:
        case.path_parameters = {**case.path_parameters, **real}
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
            if path.startswith("/v1/") and path != "/v1/keys/signing":
                assert operation["security"] == [{"bearer": []}], label
                assert {"401", "403"} <= set(responses), label
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(responses), label
            if "{" in path:
                assert {"404", "422"} <= set(responses), label
            if "429" in responses:
                assert "Retry-After" in responses["429"]["headers"], label
