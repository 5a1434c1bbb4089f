"""Client names that differ only in case or spacing (issue 20, item 13).

Before: "A " and "a" became two tenants, each with its own requests, datasets and models, and
an operator who meant one of them could hand a key to the other. Now a look-alike of an existing
client is refused (409) rather than joined to it silently; an existing name, whatever its
form, keeps working exactly as written; a new name must be written plainly.
"""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from app.db import session_scope, utcnow
from app.keys import service as key_service
from app.keys.models import ApiKey


def _create(client, operator, tenant: str):
    return client.post("/v1/keys", json={"name": "portal", "client": tenant, "scopes": ["requests:read"]}, headers=operator)


@pytest.mark.parametrize("lookalike", ["ACME", "Acme", "acme ", "acme  "])
def test_a_lookalike_of_an_existing_client_is_refused(client, operator, lookalike):
    assert _create(client, operator, "acme").status_code == 201
    response = _create(client, operator, lookalike)
    assert response.status_code == 409, response.text
    assert "'acme'" in response.json()["detail"]


def test_the_existing_name_keeps_working(client, operator):
    first = _create(client, operator, "acme").json()
    second = _create(client, operator, "acme")
    assert second.status_code == 201 and second.json()["client"] == first["client"] == "acme"


def test_a_legacy_client_written_with_spaces_keeps_working(client, operator, make_key):
    # A tenant created before the check, with a trailing space: its name is taken as it is.
    with session_scope() as session:
        session.add(ApiKey(id=uuid.uuid4(), client="Legacy ", name="legacy", prefix="obl_legacy00",
                           key_hash=key_service.hash_key(f"obl_{uuid.uuid4().hex}"), scopes="requests:read",
                           created_at=utcnow()))
    assert _create(client, operator, "Legacy ").status_code == 201
    assert _create(client, operator, "legacy").status_code == 409


def test_a_new_name_must_be_written_plainly(client, operator):
    response = _create(client, operator, "Acme  Corp")
    assert response.status_code == 422, response.text
    assert _create(client, operator, "Acme Corp").status_code == 201


def test_the_cli_refuses_a_lookalike_too(database_url, client, operator):
    from app.cli import cli

    assert _create(client, operator, "globex").status_code == 201
    result = CliRunner().invoke(cli, ["keys", "create", "--name", f"n-{uuid.uuid4().hex[:6]}", "--client", "GLOBEX ",
                                      "--scopes", "requests:read"])
    assert result.exit_code == 1 and "'globex'" in result.output
