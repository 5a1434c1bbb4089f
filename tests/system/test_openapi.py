"""The OpenAPI document as client generators read it: explicit operation ids and tags, the
Idempotency-Key header on every creating POST, exactly the problems each route can give, and
examples that validate against their schemas."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest

from tests.objects import create_dataset, logistic_weights

# The problem responses of each operation: those its code raises plus those of the shared
# machinery (app/openapi.py). A list never answers 404 or 413; only a conflict-prone route, 409.
AUTH, BODY = {"401", "403", "503"}, {"400", "413", "422"}
IDEMPOTENT = {"400", "409", "422"}
EXPECTED_PROBLEMS = {
    "check_liveness": set(), "get_metrics": set(),
    # The signing keys are read from the database (the key ring), hence 503.
    "get_signing_key": {"503"}, "list_certificate_signing_keys": {"503"},
    "verify_certificate": AUTH | BODY,
    "create_erasure_request": AUTH | BODY | IDEMPOTENT,
    "create_erasure_requests_batch": AUTH | BODY | IDEMPOTENT,
    "list_erasure_requests": AUTH | {"400", "422"},
    "get_erasure_request": AUTH | {"404", "422"},
    **{f"{action}_erasure_request": AUTH | BODY | {"404", "409"}
       for action in ("approve", "cancel", "release", "deny", "hold", "extend")},
    "set_identity_verification": AUTH | BODY | {"404", "409"},
    "get_request_audit": AUTH | {"404", "422"},
    "get_erasure_certificate": AUTH | {"404", "409", "422"},
    "verify_audit_chains": AUTH,
    "get_latest_audit_checkpoint": AUTH | {"409"},
    "get_audit_checkpoint": AUTH | {"404", "422"},
    "get_job": AUTH | {"404", "422"},
    "create_model": AUTH | BODY | IDEMPOTENT | {"404", "410", "429"},
    "import_model": AUTH | BODY | IDEMPOTENT | {"404", "410"},
    "list_models": AUTH,
    "get_model": AUTH | {"404", "409", "422"},  # 409: an admin key did not name the client of a shared name
    "download_model_weights": AUTH | {"404", "409", "410", "422"},
    "get_model_rehearsal": AUTH | {"404", "409", "422"},  # 404 also: never rehearsed
    "predict": AUTH | BODY | {"404", "409", "429"},  # 429: the client's inference calls in flight are at their bound
    "upload_dataset": AUTH | BODY | IDEMPOTENT,
    "list_datasets": AUTH | {"400", "422"},
    "get_dataset": AUTH | {"404", "422"},
    "lookup_subject": AUTH | BODY,
}
# POSTs that create something without answering 201/202 (the batch answers per item).
CREATING_WITHOUT_201 = {"create_erasure_requests_batch"}


@pytest.fixture(scope="module")
def document(database_url) -> dict:
    from app.main import create_app

    return create_app().openapi()


def _operations(document: dict):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def _without_operation_id(app) -> list[str]:
    from app.openapi import api_routes

    return [
        f"{method.upper()} {path} ({route.endpoint.__module__}.{route.endpoint.__name__})"
        for (method, path), route in sorted(api_routes(app).items()) if route.include_in_schema
        and not route.operation_id
    ]


def test_every_route_has_an_explicit_short_operation_id(database_url):
    from app.main import create_app

    missing = _without_operation_id(create_app())
    assert not missing, "give these routes operation_id=... (a short, stable snake_case name): " + ", ".join(missing)


def test_a_route_without_an_operation_id_is_named():
    from fastapi import APIRouter, FastAPI

    router = APIRouter(prefix="/v1/things")
    router.get("", operation_id="list_things")(lambda: [])
    router.post("/{thing_id}/polish")(lambda thing_id: None)
    app = FastAPI()
    app.include_router(router)
    assert _without_operation_id(app) == ["POST /v1/things/{thing_id}/polish (tests.system.test_openapi.<lambda>)"]


def test_operation_ids_are_clean_unique_and_tagged(document):
    from app.openapi import TAGS

    tags = {tag["name"] for tag in TAGS}
    seen: dict[str, str] = {}
    for label, operation in _operations(document):
        operation_id = operation["operationId"]
        assert re.fullmatch(r"[a-z][a-z_]{2,39}", operation_id), (label, operation_id)
        assert operation_id not in seen, f"{label} and {seen.get(operation_id)} share {operation_id}"
        seen[operation_id] = label
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, (label, operation["tags"])
        assert operation.get("summary"), label
    assert {"create_erasure_request", "get_request_audit", "list_erasure_requests"} <= set(seen)


def test_every_creating_post_declares_the_idempotency_key(document):
    creating = []
    for label, operation in _operations(document):
        codes = set(operation["responses"])
        if not label.startswith("POST ") or not (codes & {"201", "202"} or operation["operationId"] in CREATING_WITHOUT_201):
            continue
        creating.append(operation["operationId"])
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert len(headers) == 1, f"{label} creates something but declares no Idempotency-Key header"
        header = headers[0]
        assert header["required"] is False, label
        assert "replays the first response" in header["description"] and "409" in header["description"], label
        assert header["schema"]["maxLength"] == 255, label
    assert sorted(creating) == sorted(
        ["create_api_key", "create_dataset_grant", "create_erasure_request", "create_erasure_requests_batch", "create_model",
         "create_remediation_request", "create_remediation_request_from_file",
         "import_model", "link_identities", "rotate_api_key", "upload_dataset"]
    )


def test_each_route_documents_exactly_its_problems(document):
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for label, operation in _operations(document):
        codes = {code for code, response in operation["responses"].items() if int(code) >= 400
                 and response.get("content") == problem}
        expected = EXPECTED_PROBLEMS.get(operation["operationId"])
        if expected is None:
            # A route added since: at least the general rules hold.
            assert not (label.startswith("GET ") and "{" not in label and codes & {"404", "413"}), (label, codes)
            continue
        assert codes == expected, f"{label}: documents {sorted(codes)}, can give {sorted(expected)}"


def _examples(node, schema_path=()):
    """(where, schema, example) for every example in the document: schemas' `examples`, and
    parameters' and media types' `example`/`examples` against their schema."""
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list) and ("type" in node or "$ref" in node or "properties" in node
                                                        or "anyOf" in node):
            for example in node["examples"]:
                yield "/".join(schema_path), {k: v for k, v in node.items() if k != "examples"}, example
        if "schema" in node and isinstance(node["schema"], dict):
            if "example" in node:
                yield "/".join(schema_path), node["schema"], node["example"]
            if isinstance(node.get("examples"), dict):
                for name, example in node["examples"].items():
                    if "value" in example:
                        yield "/".join((*schema_path, name)), node["schema"], example["value"]
        for key, value in node.items():
            yield from _examples(value, (*schema_path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _examples(value, (*schema_path, str(index)))


def test_every_example_validates_against_its_schema(document):
    found = list(_examples(document))
    assert len(found) >= 10, found
    for where, schema, example in found:
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        errors = [error.message for error in validator.iter_errors(example)]
        assert not errors, (where, example, errors)


def _resolve(document: dict, schema: dict) -> dict:
    """The body's object schema: through references, and past the null of an optional body."""
    while "$ref" in schema or "anyOf" in schema:
        if "anyOf" in schema:
            schema = next(option for option in schema["anyOf"] if option.get("type") != "null")
        else:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_request_body_has_an_example(document):
    for label, operation in _operations(document):
        if "requestBody" not in operation:
            continue
        for media_type, body in operation["requestBody"]["content"].items():
            schema = _resolve(document, body["schema"])
            if "examples" in schema or "example" in body or "examples" in body:
                continue
            # A form: every field but the file has its own example.
            fields = {name: field for name, field in schema.get("properties", {}).items()
                      if field.get("format") != "binary" and field.get("contentMediaType") != "application/octet-stream"}
            assert fields and all("examples" in field for field in fields.values()), (label, media_type)


def test_the_import_metadata_example_is_valid_metadata():
    from app.models.router import IMPORT_METADATA_EXAMPLE
    from app.models.schemas import ImportMetadata

    ImportMetadata.model_validate_json(IMPORT_METADATA_EXAMPLE)


def test_the_create_example_is_accepted(client, headers):
    from app.requests.schemas import ErasureRequestCreate

    example = ErasureRequestCreate.model_json_schema()["examples"][0]
    assert client.post("/v1/erasure-requests", json=example, headers=headers).status_code == 201


def test_model_import_honours_the_idempotency_key(client, make_key):
    headers = make_key("models:write,models:read", client="importer")
    dataset = create_dataset(client, headers)
    metadata = json.dumps({"name": "idem-lr", "family": "logistic_regression",
                           "dataset_version_id": dataset["id"], "record_ids": list(range(100))})

    def send(weights: bytes, key: str = "import-1"):
        return client.post(
            "/v1/models/import", data={"metadata": metadata}, headers={**headers, "Idempotency-Key": key},
            files={"weights": ("weights.safetensors", weights, "application/octet-stream")},
        )

    first = send(logistic_weights())
    assert first.status_code == 201, first.text
    assert first.headers["location"] == "/v1/models/idem-lr"
    replay = send(logistic_weights())
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    # Same key, other weights: refused, not a replay of the first import.
    other = send(logistic_weights(seed=1))
    assert other.status_code == 422 and other.headers["content-type"].startswith("application/problem+json")
    # Without the key the name is taken: the replay above created nothing.
    assert send(logistic_weights(), key="import-2").status_code == 409
    assert [m["name"] for m in client.get("/v1/models", headers=headers).json()["items"]] == ["idem-lr"]
