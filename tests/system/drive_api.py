"""Drives every route of the API in a process of its own, then prints (as JSON) the modules of
`workers`, `torch` and the libraries built on it that the process loaded:
tests/system/test_layers.py expects none.

Run as `python tests/system/drive_api.py FOLDER` with the test's OBLIVIATE_* environment; FOLDER holds
digits.csv, weights.safetensors and base.tar (a Hugging Face save_pretrained directory), written by
the test (which imports torch and transformers itself).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from app.db import session_scope
from app.keys import service as keys
from app.main import create_app
from app.openapi import api_routes

FORBIDDEN = {"workers", "torch", "transformers", "peft", "tokenizers", "accelerate", "diffusers"}
folder = Path(sys.argv[1])
with session_scope() as session:
    _key, admin = keys.create_key(session, f"layers-{uuid.uuid4().hex[:6]}", ["admin"], client="layers")
auth = {"Authorization": f"Bearer {admin}"}
app = create_app()
statuses: dict[str, int] = {}


def call(client: TestClient, method: str, path: str, label: str | None = None, **kwargs) -> dict:
    response = client.request(method, path, headers=auth, follow_redirects=False, **kwargs)
    statuses[label or f"{method.upper()} {path}"] = response.status_code
    is_json = response.headers.get("content-type", "").startswith("application/json")
    return response.json() if is_json else {}


with TestClient(app, raise_server_exceptions=False) as client:
    request = call(client, "post", "/v1/erasure-requests", json={
        "subject": {"identifiers": {"email": "layers-subject@example.org"}}, "jurisdiction": "gdpr", "source": "portal"})
    dataset = call(client, "post", "/v1/datasets", data={
        "name": "digits", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "digit"},
        files={"file": ("data.csv", (folder / "digits.csv").read_bytes(), "application/octet-stream")})
    metadata = {"name": "layers-lr", "family": "logistic_regression", "dataset_version_id": dataset["id"],
                "record_ids": list(range(100))}
    model = call(client, "post", "/v1/models/import", label="import", data={"metadata": json.dumps(metadata)},
                 files={"weights": ("w.safetensors", (folder / "weights.safetensors").read_bytes(), "application/octet-stream")})
    call(client, "post", "/v1/models/import", label="import-base", data={"metadata": json.dumps({"kind": "base", "name": "layers-base"})},
         files={"archive": ("base.tar", (folder / "base.tar").read_bytes(), "application/x-tar")})
    prediction = call(client, "post", f"/v1/models/{model['name']}/predict", label="predict", json={"rows": [[0.5] * 64] * 3})
    call(client, "get", f"/v1/models/{model['name']}/versions/1/weights", label="weights")
    job = call(client, "post", "/v1/models", label="train", json={
        "name": "layers-queued", "family": "logistic_regression", "dataset_id": dataset["dataset_id"]})
    spare = call(client, "post", "/v1/keys", json={"name": "layers-spare", "scopes": ["requests:read"]})
    login_token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text).group(1)
    call(client, "post", "/admin/login", label="login", data={"api_key": admin, "csrf_token": login_token})
    values = {
        "request_id": request["id"], "dataset_id": dataset["dataset_id"], "name": model["name"], "version": "1",
        "job_id": job["id"], "key_id": spare["id"],
        "run_id": str(uuid.uuid4()), "tree_size": "1", "action": "approve",
    }
    routes = sorted(api_routes(app), key=lambda item: (item[0] == "post", item[1] == "/admin/logout", item))
    for method, template in routes:
        path = re.sub(r"\{(\w+)\}", lambda match: values.get(match.group(1), "x"), template)
        call(client, method, path, label=f"{method.upper()} {template}", **({"json": {}} if method == "post" else {}))

print(json.dumps({
    "routes": [f"{method.upper()} {template}" for method, template in routes],
    "statuses": statuses, "prediction": prediction,
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN),
}))
