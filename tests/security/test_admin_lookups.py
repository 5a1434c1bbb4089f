"""Model names are unique per client only. An admin key that names a model several clients use
must say which client's it means; it is never given whichever row the database returns first."""

from __future__ import annotations

import pytest

from tests.objects import create_dataset, import_model

SCOPES = "models:write,models:read"
ROW = {"rows": [[0.0] * 64]}


@pytest.fixture
def same_name(client, make_key):
    alpha, beta = make_key(SCOPES, client="alpha"), make_key(SCOPES, client="beta")
    models = {}
    for name, headers in (("alpha", alpha), ("beta", beta)):
        models[name] = import_model(client, headers, create_dataset(client, headers)["id"], name="churn")
    import_model(client, beta, create_dataset(client, beta, name="other")["id"], name="beta-only")
    return {"alpha": alpha, "beta": beta, "admin": make_key("admin", client="operators"), "models": models}


ROUTES = [("GET", "/v1/models/{}", None), ("GET", "/v1/models/{}/versions/1/weights", None),
          ("POST", "/v1/models/{}/predict", ROW)]


@pytest.mark.parametrize("method, template, body", ROUTES)
def test_an_ambiguous_name_needs_the_client(client, same_name, inference_worker, method, template, body):
    admin = same_name["admin"]
    ambiguous = client.request(method, template.format("churn"), json=body, headers=admin)
    assert ambiguous.status_code == 409, ambiguous.text
    assert "client" in ambiguous.json()["detail"]
    for owner in ("alpha", "beta"):
        chosen = client.request(method, template.format("churn"), params={"client": owner}, json=body, headers=admin)
        assert chosen.status_code == 200, chosen.text
    unique = client.request(method, template.format("beta-only"), json=body, headers=admin)
    assert unique.status_code == 200, unique.text
    wrong = client.request(method, template.format("beta-only"), params={"client": "alpha"}, json=body, headers=admin)
    assert wrong.status_code == 404


def test_the_named_client_is_the_one_answered(client, same_name):
    admin, models = same_name["admin"], same_name["models"]
    for owner in ("alpha", "beta"):
        body = client.get("/v1/models/churn", params={"client": owner}, headers=admin).json()
        assert body["id"] == models[owner]["id"] and body["client"] == owner


def test_other_keys_only_ever_reach_their_own_client(client, same_name):
    alpha = same_name["alpha"]
    mine = client.get("/v1/models/churn", headers=alpha).json()
    assert mine["id"] == same_name["models"]["alpha"]["id"]
    assert client.get("/v1/models/churn", params={"client": "alpha"}, headers=alpha).json()["id"] == mine["id"]
    other = client.get("/v1/models/churn", params={"client": "beta"}, headers=alpha)
    missing = client.get("/v1/models/no-such-model", headers=alpha)
    assert other.status_code == missing.status_code == 404 and other.json() == missing.json()
    assert client.get("/v1/models/beta-only", headers=alpha).status_code == 404


def test_a_client_with_control_characters_is_refused_with_422(client, make_key):
    """The client names a row in a query: a NUL must answer 422, not reach PostgreSQL (500)."""
    admin = make_key("models:read,admin", client="ops")
    for path in ("/v1/models/digits-lr", "/v1/keys"):
        answer = client.get(path, params={"client": "acme\x00"}, headers=admin)
        assert answer.status_code == 422, (path, answer.status_code)
        assert "acme" not in answer.text
