"""The `obliviate` command line, run in-process against the pass's database."""

from __future__ import annotations

import csv
import json
import re

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from app.cli import cli
from tests.objects import approve, request_body

PLANTED = "planted-cli-leak-7f3a@example.org"
KEY_PATTERN = re.compile(r"obl_[A-Za-z0-9_-]+")


@pytest.fixture
def run(database_url):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args))

    return invoke


def _count(client: str) -> int:
    from app.db import session_scope
    from app.requests.models import ErasureRequest

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(ErasureRequest).where(ErasureRequest.client == client))


def _jsonl(path, records) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _record(n: int, **extra) -> dict:
    return {
        "subject": {"identifiers": {"email": f"person{n}@example.org", "user_id": f"u-{n}"}},
        "jurisdiction": "gdpr" if n % 2 else "ccpa", "source": "batch", "external_id": f"ext-{n}", **extra,
    }


def test_keys_create_prints_a_working_key(run, client):
    result = run("keys", "create", "--name", "portal", "--scopes", "requests:write,requests:read", "--client", "acme")
    assert result.exit_code == 0, result.output
    keys = KEY_PATTERN.findall(result.stdout)
    assert len(keys) == 1
    assert "client:  acme" in result.stdout and "requests:read, requests:write" in result.stdout
    headers = {"Authorization": f"Bearer {keys[0]}"}
    body = request_body(identifiers={"email": "person42@example.org"})
    created = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert client.get(f"/v1/erasure-requests/{created.json()['id']}", headers=headers).status_code == 200


def test_keys_create_refuses_unknown_scopes(run):
    result = run("keys", "create", "--name", "x", "--scopes", "requests:write,root")
    assert result.exit_code == 2
    assert "root" in result.output and "requests:read" in result.output
    assert not KEY_PATTERN.search(result.output)


def test_import_jsonl_is_idempotent_and_reports_bad_lines_without_content(run, tmp_path, make_key, client):
    path = tmp_path / "requests.jsonl"
    _jsonl(path, [
        _record(1), _record(2),
        {**_record(3), "jurisdiction": "mars", "reason": f"contact {PLANTED}"},
        "",
        f'{{"subject": {{"identifiers": {{"email": "{PLANTED}"}}}}, broken',
        {**_record(5), "external_id": None},
        {"subject": {"identifiers": {"email": "no-at-sign-" + PLANTED.replace("@", "")}}, "jurisdiction": "gdpr",
         "source": "batch", "external_id": "ext-7"},
        _record(8, identity_verified=True),
    ])
    first = run("requests", "import", str(path), "--client", "acme", "--batch-size", "2")
    assert first.exit_code == 1, first.output
    assert _count("acme") == 3
    for line in (3, 5, 6, 7):
        assert f"line {line}:" in first.output
    assert "line 4:" not in first.output and "line 1:" not in first.output
    assert "jurisdiction" in first.output and "external_id" in first.output
    assert PLANTED not in first.output and PLANTED.replace("@", "") not in first.output
    assert re.search(r"│\s*3\s*│\s*0\s*│\s*4\s*│", first.stdout), first.stdout

    second = run("requests", "import", str(path), "--client", "acme")
    assert second.exit_code == 1
    assert re.search(r"│\s*0\s*│\s*3\s*│\s*4\s*│", second.stdout), second.stdout
    assert _count("acme") == 3

    from app.audit.models import AuditEvent
    from app.db import session_scope

    with session_scope() as session:
        assert set(session.scalars(select(AuditEvent.actor).where(AuditEvent.seq == 1))) == {"cli:import"}

    listed = client.get("/v1/erasure-requests", headers=make_key("requests:read", client="acme")).json()
    assert sorted(item["external_id"] for item in listed["items"]) == ["ext-1", "ext-2", "ext-8"]
    assert all(item["source"] == "batch" for item in listed["items"])


def test_import_all_valid_exits_zero_and_is_per_client(run, tmp_path):
    path = tmp_path / "ok.ndjson"
    _jsonl(path, [_record(n) for n in range(1, 6)])
    assert run("requests", "import", str(path), "--client", "acme").exit_code == 0
    assert run("requests", "import", str(path), "--client", "globex").exit_code == 0
    assert _count("acme") == 5 and _count("globex") == 5


def test_import_csv(run, tmp_path):
    path = tmp_path / "requests.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "jurisdiction", "source", "identity_verified", "reason", "identifier.email", "identifier.phone"])
        writer.writerow(["c-1", "gdpr", "portal", "true", "", "one@example.org", ""])
        writer.writerow(["c-2", "ccpa", "batch", "no", "multi\nline reason", "", "+1 (555) 010-9999"])
        writer.writerow(["c-3", "gdpr", "admin", "maybe", "", PLANTED, ""])
        writer.writerow(["c-4", "xx", "batch", "false", "", PLANTED, ""])
        writer.writerow(["c-5", "gdpr", "batch", "", "", "", ""])
        writer.writerow(["c-6", "gdpr", "batch", "1", "", "six@example.org", ""])
    first = run("requests", "import", str(path), "--client", "acme")
    assert first.exit_code == 1, first.output
    assert _count("acme") == 3
    # c-2's reason spans two lines, so the rows after it start one line later.
    assert "line 5: identity_verified" in first.output
    assert "line 6: jurisdiction" in first.output
    assert "line 7: subject.identifiers" in first.output
    assert PLANTED not in first.output
    second = run("requests", "import", str(path), "--client", "acme", "--format", "csv")
    assert re.search(r"│\s*0\s*│\s*3\s*│\s*3\s*│", second.stdout), second.stdout
    assert _count("acme") == 3


def test_import_refuses_unknown_csv_columns_and_formats(run, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("external_id,jurisdiction,source,email\nx,gdpr,batch,a@b.org\n")
    result = run("requests", "import", str(path))
    # The unknown column is named by position: a file without a header row would show a record.
    assert result.exit_code == 2 and "column 4" in result.output and "email" not in result.output
    other = tmp_path / "requests.txt"
    other.write_text(json.dumps(_record(1)) + "\n")
    assert run("requests", "import", str(other)).exit_code == 2
    assert run("requests", "import", str(other), "--format", "jsonl").exit_code == 0


def test_interrupted_import_resumes_with_only_the_missing(run, tmp_path, monkeypatch):
    from app.requests import service

    path = tmp_path / "big.jsonl"
    _jsonl(path, [_record(n) for n in range(1, 11)])
    real_create = service.create
    calls = {"n": 0}

    def flaky_create(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_create(*args, **kwargs)

    monkeypatch.setattr(service, "create", flaky_create)
    interrupted = run("requests", "import", str(path), "--client", "acme", "--batch-size", "4")
    assert interrupted.exit_code == 130, interrupted.output
    assert "Run the same command again" in interrupted.output
    # The first batch of four committed; the second rolled back with the interruption.
    assert _count("acme") == 4
    monkeypatch.setattr(service, "create", real_create)
    resumed = run("requests", "import", str(path), "--client", "acme", "--batch-size", "4")
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"│\s*6\s*│\s*4\s*│\s*0\s*│", resumed.stdout), resumed.stdout
    assert _count("acme") == 10


def _tamper(statement: str) -> None:
    from app.db import get_engine

    engine = get_engine()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
        connection.execute(text(statement))


def test_audit_verify_detects_tampering(run, client, headers):
    body = request_body(identifiers={"email": "a@example.org"})
    ids = [client.post("/v1/erasure-requests", json=body, headers=headers).json()["id"] for _ in range(3)]
    assert approve(client, headers, ids[1]).status_code == 200

    clean = run("audit", "verify")
    assert clean.exit_code == 0, clean.output
    # Three request chains (4 events) and the key's chain (key.created).
    assert re.search(r"│\s*4\s*│\s*5\s*│\s*0\s*│", clean.stdout), clean.stdout

    _tamper(f"UPDATE audit_events SET actor = 'someone-else' WHERE stream = 'request:{ids[1]}' AND seq = 2")
    broken = run("audit", "verify")
    assert broken.exit_code == 1, broken.output
    assert f"request:{ids[1]}" in broken.stdout
    assert f"request:{ids[0]}" not in broken.stdout
    assert "hash does not match" in broken.stdout


def test_audit_verify_offline_file(run, client, headers, tmp_path):
    body = request_body(identifiers={"email": "person9@example.org"}, jurisdiction="ccpa", source="admin")
    rid = client.post("/v1/erasure-requests", json=body, headers=headers).json()["id"]
    client.post(f"/v1/erasure-requests/{rid}/hold", json={"reason": "legal check"}, headers=headers)
    client.post(f"/v1/erasure-requests/{rid}/release", headers=headers)
    trail = client.get(f"/v1/erasure-requests/{rid}/audit", headers=headers).json()
    assert len(trail["events"]) == 3
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(trail))
    assert run("audit", "verify", "--file", str(path)).exit_code == 0
    assert run("audit", "verify", "--file", str(path), "--head", trail["head"]).exit_code == 0

    truncated = {**trail, "events": trail["events"][:2]}
    path.write_text(json.dumps(truncated))
    assert run("audit", "verify", "--file", str(path)).exit_code == 0
    assert run("audit", "verify", "--file", str(path), "--head", trail["head"]).exit_code == 1

    edited = json.loads(json.dumps(trail))
    edited["events"][1]["data"]["reason"] = "nothing to see"
    path.write_text(json.dumps(edited))
    result = run("audit", "verify", "--file", str(path))
    assert result.exit_code == 1 and "seq 2" in result.stdout

    path.write_text("{not json")
    assert run("audit", "verify", "--file", str(path)).exit_code == 2
