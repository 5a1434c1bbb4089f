"""A Python client generated with openapi-python-client from the running server's /openapi.json,
on every run, and the quick start of docs/api.md driven through it against that server: create with an
Idempotency-Key, replay, approve, read the audit trail, page through the list."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.client import generated_client
from tests.live import serve

QUICKSTART = Path(__file__).with_name("client_quickstart.py")


@pytest.fixture(scope="module")
def generated(database_url, tmp_path_factory):
    """(base URL, generated project folder) for a server that stays up for the module."""
    from app.main import create_app

    with serve(create_app()) as base_url:
        target = tmp_path_factory.mktemp("client")
        document = target / "openapi.json"
        document.write_text(httpx.get(f"{base_url}/openapi.json", timeout=30).text)
        yield base_url, generated_client.generate(document, target)


def test_the_generated_client_has_clean_names_and_the_idempotency_key(generated):
    _base_url, project = generated
    package = project / generated_client.PACKAGE
    create = (package / "api" / "erasure_requests" / "create_erasure_request.py").read_text()
    assert "idempotency_key: None | str | Unset = UNSET" in create
    assert 'headers["Idempotency-Key"] = idempotency_key' in create
    # Problems parse into one model, on every documented error.
    assert "Problem.from_dict" in create
    for module in ("get_request_audit", "approve_erasure_request", "list_erasure_requests"):
        assert (package / "api" / "erasure_requests" / f"{module}.py").exists(), module
    for tag in ("models", "datasets"):
        created = next((package / "api" / tag).glob("*.py"))
        assert "_v1_" not in created.name, created
    names = [path.stem for path in (package / "api").rglob("*.py")]
    assert not [name for name in names if name.endswith(("_get", "_post")) or "_v1_" in name], names
    # Every body a client reads has a model of its own name, not one made up from the operation.
    models = [path.stem for path in (package / "models").glob("*.py")]
    assert not [name for name in models if "_response_" in name], models
    assert {"erasure_request_out", "problem", "audit_trail", "certificate", "signing_key", "liveness"} <= set(models)


def test_the_quick_start_through_the_generated_client(generated, make_key):
    base_url, project = generated
    key = make_key("requests:write,requests:read,requests:review", client="portal")["Authorization"].split()[1]
    result = subprocess.run(
        [generated_client.python(generated_client.generator_venv()), str(QUICKSTART), base_url, key],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(project)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    created, replayed = seen["created"], seen["replayed"]
    assert created["status"] == 201 and created["location"] == f"/v1/erasure-requests/{created['id']}"
    assert created["status_field"] == "received"
    assert replayed == {"status": 201, "id": created["id"], "header": "true"}
    assert seen["refused"] == {"status": 422, "problem_status": 422, "problem_title": "Unprocessable content"}
    assert seen["approved"] == "approved"
    assert seen["audit"]["request_id"] == created["id"] and seen["audit"]["chain_valid"] is True
    assert seen["audit"]["events"][:2] == ["request.received", "request.approved"]
    # Five requests, two a page, newest first, each exactly once.
    pages = seen["pages"]
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [request_id for page in pages for request_id in page]
    assert len(set(listed)) == 5 and listed[-1] == created["id"]
