"""schemathesis against the app's own OpenAPI schema: every operation, positive and negative
inputs, with an admin key so that authorisation passes. No response is a server error, and every
response (status code, content type, body) is what the schema documents.

`bench/fuzz.sh` runs the same checks with many more examples against a running server.
"""

from __future__ import annotations

import os
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

EXAMPLES = int(os.environ.get("OBLIVIATE_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance, response_headers_conformance,
]


@pytest.fixture
def admin_headers(make_key):
    return make_key("admin", client="fuzz")


@contextmanager
def _secret_only_env():
    """The schema is read at collection time, before the test database exists: building the app
    then must not create an embedded secret file anywhere."""
    from app.config import reset_settings

    saved = os.environ.get("OBLIVIATE_SECRET_KEY")
    os.environ["OBLIVIATE_SECRET_KEY"] = saved or TEST_SECRET
    reset_settings()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OBLIVIATE_SECRET_KEY", None)
        reset_settings()


def _openapi() -> dict:
    from app.main import create_app

    with _secret_only_env():
        return create_app().openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def seeded(client, admin_headers):
    """Real objects, so that lists, datasets and models answer with bodies worth checking."""
    for _ in range(3):
        create_request(client, admin_headers)
    dataset = create_dataset(client, admin_headers)
    import_model(client, admin_headers, dataset["id"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, app, admin_headers, seeded):
    response = case.call(app=app, headers=admin_headers)
    case.validate_response(response, checks=CHECKS, headers=admin_headers)
