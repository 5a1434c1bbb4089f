"""A dataset is reachable for training and import only by its own client, admin keys included,
unless its client granted another client its use (issue 20, item 8). Grants are created and
revoked through the API, and both are audited on the dataset's stream."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests import objects

WRITE = "models:write,models:read"


@pytest.fixture
def world(client, make_key):
    alpha, beta = make_key(WRITE, client="alpha"), make_key(WRITE, client="beta")
    admin = make_key("admin", client="operators")
    dataset = objects.create_dataset(client, alpha)
    return {"alpha": alpha, "beta": beta, "admin": admin, "dataset": dataset}


def _train(client, headers, dataset_id: str, name: str):
    return client.post("/v1/models", json={"name": name, "family": "logistic_regression", "dataset_id": dataset_id},
                       headers=headers)


def _import(client, headers, version_id: str, name: str):
    metadata = {"name": name, "family": "logistic_regression", "dataset_version_id": version_id,
                "record_ids": list(range(20))}
    return client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                       files={"weights": ("w.safetensors", objects.logistic_weights(), "application/octet-stream")},
                       headers=headers)


def _events(dataset_id: str) -> list[tuple[str, dict]]:
    from app.audit.models import AuditEvent
    from app.db import session_scope

    with session_scope() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.stream == f"dataset:{dataset_id}").order_by(AuditEvent.seq))
        return [(row.type, dict(row.data)) for row in rows]


def test_an_admin_key_cannot_train_or_import_on_another_clients_dataset(client, world):
    dataset = world["dataset"]
    for any_id in (dataset["dataset_id"], dataset["id"]):
        trained = _train(client, world["admin"], any_id, "admin-trained")
        assert trained.status_code == 404, trained.text
    imported = _import(client, world["admin"], dataset["id"], "admin-imported")
    assert imported.status_code == 404, imported.text
    assert _train(client, world["alpha"], dataset["dataset_id"], "own").status_code == 202


def test_a_grant_opens_the_dataset_to_one_client_until_it_is_revoked(client, world):
    dataset_id, version_id = world["dataset"]["dataset_id"], world["dataset"]["id"]
    assert _train(client, world["beta"], dataset_id, "before").status_code == 404
    granted = client.post(f"/v1/datasets/{dataset_id}/grants", json={"client": "beta"}, headers=world["alpha"])
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    assert grant["client"] == "beta" and grant["revoked_at"] is None
    assert _train(client, world["beta"], dataset_id, "granted").status_code == 202
    assert _import(client, world["beta"], version_id, "granted-import").status_code == 201
    # Granted to beta, not to every client, and not to admin keys.
    assert _train(client, world["admin"], dataset_id, "admin").status_code == 404
    again = client.post(f"/v1/datasets/{dataset_id}/grants", json={"client": "beta"}, headers=world["alpha"])
    assert again.status_code == 409
    listed = client.get(f"/v1/datasets/{dataset_id}/grants", headers=world["alpha"]).json()
    assert [g["id"] for g in listed] == [grant["id"]]

    revoked = client.delete(f"/v1/datasets/{dataset_id}/grants/{grant['id']}", headers=world["alpha"])
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert _train(client, world["beta"], dataset_id, "after").status_code == 404
    assert _events(dataset_id) == [
        ("dataset.grant_created", {"grant_id": grant["id"], "grantee_client": "beta"}),
        ("dataset.grant_revoked", {"grant_id": grant["id"], "grantee_client": "beta"}),
    ]


@pytest.mark.parametrize("caller", ["beta", "admin"])
def test_only_the_datasets_own_client_manages_its_grants(client, world, caller):
    dataset_id = world["dataset"]["dataset_id"]
    headers = world[caller]
    assert client.post(f"/v1/datasets/{dataset_id}/grants", json={"client": caller}, headers=headers).status_code == 404
    assert client.get(f"/v1/datasets/{dataset_id}/grants", headers=headers).status_code == 404
    grant = client.post(f"/v1/datasets/{dataset_id}/grants", json={"client": "gamma"}, headers=world["alpha"]).json()
    assert client.delete(f"/v1/datasets/{dataset_id}/grants/{grant['id']}", headers=headers).status_code == 404
    assert _events(dataset_id) == [("dataset.grant_created", {"grant_id": grant["id"], "grantee_client": "gamma"})]


def test_a_grant_to_the_datasets_own_client_is_422(client, world):
    dataset_id = world["dataset"]["dataset_id"]
    response = client.post(f"/v1/datasets/{dataset_id}/grants", json={"client": "alpha"}, headers=world["alpha"])
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
