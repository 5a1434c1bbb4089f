"""The OpenAPI document, made truthful about what the middleware and the error handlers answer.

FastAPI documents only what a route declares, plus a 422 in a JSON shape this service never
sends. Here every error response is documented as RFC 9457 `application/problem+json` with one
`Problem` schema. A route declares the problems its own code raises (`problem_responses(404, 409)`);
added here are those the shared machinery produces for it: 401 and 403 where a key is required, 400
and 413 where a body is read (an unparsable body, the body size limit), 422 where anything is
validated, 404 where a path names an object, 400, 409 and 422 where an `Idempotency-Key` is honoured,
503 with `Retry-After` where the database is used (it went away), and the `Retry-After` header of a 429.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.deps import get_principal, get_session
from app.errors import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Extra members (errors, current_status, ...) depend on the problem.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A URI that identifies the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Validation errors; never carry the input.",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
DESCRIPTIONS = {
    400: "Bad request (for example a body that cannot be parsed)",
    401: "Missing or invalid API key",
    403: "The key lacks the scope",
    404: "Not found (also for another client's object)",
    409: "Conflict",
    410: "Gone",
    413: "Payload too large",
    422: "Validation failed",
    429: "Too many requests",
    503: "Service unavailable",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "The expected scheme: Bearer.", "schema": {"type": "string"}}}
IDEMPOTENCY_HEADER = "idempotency-key"
# One tag per domain; client generators group operations by tag (one module each).
TAGS = [
    {"name": "erasure requests", "description": "Intake, review and progress of erasure requests."},
    {"name": "remediation requests", "description": "Removing a slice of a dataset (bias, poisoning, licence, quality), "
                                                    "with its dry run, four-eyes approval and certificate."},
    {"name": "audit", "description": "The hash-chained audit trail."},
    {"name": "certificates", "description": "Signed certificates of erasure and the key that signs them."},
    {"name": "datasets", "description": "Training data, stored under pseudonymous subject keys."},
    {"name": "models", "description": "Model training, import, weights and predictions."},
    {"name": "jobs", "description": "Progress of background jobs (training, unlearning)."},
    {"name": "lineage", "description": "Which data and models hold a data subject."},
    {"name": "identities", "description": "Identifiers that denote one person, and the kinds a client knows."},
    {"name": "keys", "description": "API keys: create, list, revoke and rotate (scope `admin`)."},
    {"name": "health", "description": "Liveness, readiness and metrics."},
]


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the problems a route's own code raises; `document_problems` gives them
    the Problem schema and adds those of the shared machinery."""
    return {code: {"description": DESCRIPTIONS[code], "content": {PROBLEM_JSON: {}}} for code in codes}


def _depends_on(dependant: Dependant, call: Any) -> bool:
    return dependant.call is call or any(_depends_on(sub, call) for sub in dependant.dependencies)


def _authenticates(dependant: Dependant) -> bool:
    return (
        dependant.call is get_principal or getattr(dependant.call, "authenticates", False)
        or any(_authenticates(sub) for sub in dependant.dependencies)
    )


def _honours_idempotency_key(dependant: Dependant) -> bool:
    return any(p.alias.lower() == IDEMPOTENCY_HEADER for p in dependant.header_params) or any(
        _honours_idempotency_key(sub) for sub in dependant.dependencies
    )


def _validates(dependant: Dependant) -> bool:
    return bool(
        dependant.path_params or dependant.query_params or dependant.header_params or dependant.body_params
    ) or any(_validates(sub) for sub in dependant.dependencies)


def _is_problem(response: dict[str, Any]) -> bool:
    """An error response whose body is the service's problem document (not a declared model)."""
    content = response.get("content") or {}
    for media_type, body in content.items():
        schema = (body or {}).get("schema")
        if media_type == PROBLEM_JSON or not schema:
            continue
        if schema.get("$ref", "").endswith("/HTTPValidationError"):
            continue
        return False
    return True


def api_routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """(method, path) → route. Newer FastAPI keeps included routers as lazy branches; its own
    iterator resolves them (with the effective path), older versions list APIRoutes directly."""
    iterate = getattr(routing, "iter_route_contexts", None)
    found: dict[tuple[str, str], APIRoute] = {}
    for item in iterate(app.routes) if iterate else app.routes:
        route = getattr(item, "original_route", item)
        if isinstance(route, APIRoute):
            for method in item.methods or ():
                found[(method.lower(), item.path_format)] = route
    return found


def document_problems(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    routes = api_routes(app)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    schema["tags"] = TAGS
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer obl_...`.",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((method, path))
            if route is None:
                continue
            _omit_rather_than_null(operation)
            responses = operation.setdefault("responses", {})
            codes: set[int] = set()
            if _authenticates(route.dependant):
                codes |= {401, 403}
                operation["security"] = [{"bearer": []}]
            if route.dependant.body_params:
                codes |= {400, 413}
            if _validates(route.dependant):
                codes.add(422)
            if route.dependant.path_params:
                codes.add(404)
            if _honours_idempotency_key(route.dependant):
                # A blank or overlong key, the first request still in flight, another body.
                codes |= {400, 409, 422}
            if codes & {401, 403} or _depends_on(route.dependant, get_session):
                # A route that uses the database may find it gone (app/errors.py): 503 with Retry-After.
                codes.add(503)
            for code in codes:
                responses.setdefault(str(code), {})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400 or not _is_problem(response):
                    continue
                response["description"] = DESCRIPTIONS.get(int(code), response.get("description") or "Error")
                response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
                if code in ("429", "503"):
                    response["headers"] = RETRY_AFTER
                elif code == "401":
                    response["headers"] = WWW_AUTHENTICATE
    used = _refs(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name not in used:
            components["schemas"].pop(name, None)
    return schema


def _omit_rather_than_null(operation: dict[str, Any]) -> None:
    """An optional body (`body: X | None = None`) is documented as not required *and* nullable;
    generated clients then send a JSON null, or crash on their "unset" marker. Left out is what
    the route expects, so the document says only that: not required, and an X when present."""
    body = operation.get("requestBody")
    if not body or body.get("required"):
        return
    for media in body.get("content", {}).values():
        options = (media.get("schema") or {}).get("anyOf") or []
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1 and len(options) == 2:
            media["schema"] = kept[0]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with one that post-processes FastAPI's document once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "openapi_documented", False):
            return app.openapi_schema
        schema = document_problems(app, generate())
        app.openapi_schema = schema
        app.state.openapi_documented = True
        return schema

    app.openapi = openapi
