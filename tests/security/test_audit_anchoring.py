"""Audit anchoring: the log over all events, its signed checkpoints, and what they reveal.

The attacker here owns the tables (the migration role), which is more than the service role can
do: drops every trigger, rewrites a chain with recomputed hashes and a fixed head, deletes every
checkpoint row and the published copies. The chains alone then verify; a checkpoint exported
earlier does not.
"""

from __future__ import annotations

import base64
import hashlib
import shutil

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from tests.conftest import SERVICES
from tests.objects import approve, request_body
from tests.security.anchoring_helpers import (
    REVIEWER, URL, api_client, build_log, certified_request, cli, delete_chain, drop_every_trigger, key,
    own_database, rewrite_chain, truncate_and_fix_head,
)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 §2.1, recursively: the reference the checkpointer must match."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:split]) + rfc6962_root(leaves[split:])).digest()


def test_frontier_matches_rfc6962_for_every_size():
    from app.audit.merkle import Frontier

    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(70)]
    frontier = Frontier()
    for size in range(71):
        assert frontier.root() == rfc6962_root([bytes.fromhex(h) for h in hashes[:size]]), size
        # Resuming from a stored frontier gives the same tree.
        assert Frontier(frontier.size, frontier.nodes).root() == frontier.root()
        if size < 70:
            frontier.append(hashes[size])


def _count() -> int:
    """Events in the log: requests' and keys' (key creation is audited too)."""
    from app.audit.models import AuditEvent
    from app.db import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent))


def _events(session):
    from app.audit.models import AuditEvent

    return session.execute(select(AuditEvent.log_index, AuditEvent.hash).order_by(AuditEvent.log_index)).all()


def test_checkpoints_sign_the_log_and_are_served(database_url, monkeypatch, tmp_path):
    from app.audit import checkpoints
    from app.audit.notes import open_checkpoint
    from app.db import session_scope

    with own_database(monkeypatch, tmp_path), api_client() as client:
        headers, auditor = key(), key("audit:read", client="auditor")
        assert client.get("/v1/audit/checkpoints/latest", headers=auditor).status_code == 409
        build_log(client, headers, 3)
        made = checkpoints.run()
        size = _count()
        assert [c.tree_size for c in made] == [size]
        assert checkpoints.run() == []  # nothing new: no new checkpoint
        with session_scope() as session:
            events = _events(session)
        assert [index for index, _ in events] == list(range(size))
        assert made[0].root_hash == rfc6962_root([bytes.fromhex(h) for _, h in events])

        served = client.get("/v1/audit/checkpoints/latest", headers=auditor)
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
        assert served.text == made[0].text == (tmp_path / "published" / "latest").read_text()
        assert (tmp_path / "published" / str(size)).read_text() == made[0].text
        assert client.get(f"/v1/audit/checkpoints/{size}", headers=auditor).text == made[0].text
        assert client.get(f"/v1/audit/checkpoints/{size - 1}", headers=auditor).status_code == 404
        assert client.get("/v1/audit/checkpoints/latest", headers=key("requests:read")).status_code == 403
        assert client.get("/v1/audit/checkpoints/latest").status_code == 401

        # The verifier key in C2SP form opens the note: name+hex key id+base64(0x01 ‖ key).
        signing = client.get("/v1/keys/signing").json()
        name, key_hex, encoded = signing["checkpoint_verifier_key"].split("+", 2)
        raw = base64.b64decode(encoded)
        assert raw[0] == 1 and name == signing["checkpoint_origin"]
        opened = open_checkpoint(served.text, raw[1:])
        assert (opened.tree_size, opened.origin) == (size, name)
        assert base64.b64decode(served.text.split("\n")[4].split(" ")[2])[:4].hex() == key_hex
        with pytest.raises(ValueError):
            open_checkpoint(served.text.replace(f"\n{size}\n", f"\n{size - 1}\n"), raw[1:])

        assert client.get(f"/v1/audit/checkpoints/{2**64}", headers=auditor).status_code == 422

        # New events: the next checkpoint extends the tree, also from the CLI.
        build_log(client, headers, 1)
        exported = tmp_path / "exported.note"
        result = cli("audit", "checkpoint", "--out", str(exported))
        assert result.exit_code == 0, result.output
        assert exported.read_text() == client.get("/v1/audit/checkpoints/latest", headers=auditor).text
        assert exported.read_text().split("\n")[1] == str(_count())


def test_a_certificate_is_anchored_by_the_checkpoint_right_after_it(database_url, monkeypatch, tmp_path):
    from app.audit import checkpoints
    from app.audit.models import AuditEvent
    from app.db import session_scope

    with own_database(monkeypatch, tmp_path), api_client() as client:
        headers = key()
        rid = certified_request(client, headers)
        with session_scope() as session:
            unsequenced = session.scalar(select(func.count()).where(AuditEvent.log_index.is_(None)))
            latest = checkpoints.latest(session)
            total = session.scalar(select(func.count()).select_from(AuditEvent))
        # No beat ran: the commit that issued the certificate signed a checkpoint over it.
        assert unsequenced == 0 and latest is not None and latest.tree_size == total
        report = client.get("/v1/audit/verify", headers=key("admin")).json()
        assert report["valid"] is True, report
        assert report["log"]["certificates"] == 1 and report["log"]["unanchored_certificates"] == 0
        assert client.get(f"{URL}/{rid}/certificate", headers=headers).status_code == 200


def test_the_documented_head_check_passes_on_a_genuine_trail(database_url, monkeypatch, tmp_path):
    import json

    with own_database(monkeypatch, tmp_path), api_client() as client:
        headers = key()
        rid = certified_request(client, headers)
        trail = client.get(f"{URL}/{rid}/audit", headers=headers).json()
        certificate = client.get(f"{URL}/{rid}/certificate", headers=headers).json()["certificate"]
        assert trail["events"][-1]["type"] == "certificate.issued"
        path = tmp_path / "trail.json"
        path.write_text(json.dumps(trail))
        genuine = cli("audit", "verify", "--file", str(path), "--head", certificate["audit_chain"]["head"])
        assert genuine.exit_code == 0, genuine.output
        # The certificate's link cut off the trail: the held head is missing, and that is reported.
        cut = dict(trail, events=trail["events"][:certificate["audit_chain"]["seq"] - 1])
        path.write_text(json.dumps(cut))
        dropped = cli("audit", "verify", "--file", str(path), "--head", certificate["audit_chain"]["head"])
        assert dropped.exit_code == 1 and "do not contain the given head" in dropped.output


ATTACKS = {"rewrite": rewrite_chain, "truncate": truncate_and_fix_head, "delete_chain": delete_chain}


@pytest.mark.parametrize("erase_positions", [False, True], ids=["positions-kept", "positions-erased"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_owner_forgery_is_reported_against_an_exported_checkpoint(database_url, monkeypatch, tmp_path, attack, erase_positions):
    from app.audit import checkpoints, service
    from app.audit.models import AuditCheckpoint, AuditEvent
    from app.db import get_engine, session_scope

    with own_database(monkeypatch, tmp_path), api_client() as client:
        headers, auditor = key(), key("audit:read", client="auditor")
        ids = build_log(client, headers, 4)
        checkpoints.run()
        exported = tmp_path / "held.note"
        exported.write_text(client.get("/v1/audit/checkpoints/latest", headers=auditor).text)
        # The log grows and is checkpointed again: the older, held checkpoint still verifies.
        build_log(client, headers, 2)
        checkpoints.run()
        genuine = cli("audit", "verify", "--checkpoint", str(exported))
        assert genuine.exit_code == 0, genuine.output

        with get_engine().begin() as connection:
            drop_every_trigger(connection)
            ATTACKS[attack](connection, f"request:{ids[1]}")
            connection.execute(AuditCheckpoint.__table__.delete())
            if erase_positions:
                connection.execute(update(AuditEvent.__table__).values(log_index=None))
        shutil.rmtree(tmp_path / "published")

        with session_scope() as session:
            assert all(result.valid for _stream, result in service.verify_all(session)), "the chains alone are fooled"
        caught = cli("audit", "verify", "--checkpoint", str(exported))
        assert caught.exit_code == 1, caught.output
        assert "checkpoint file held.note" in caught.output
        held_size = exported.read_text().split("\n")[1]
        expected = f"covers {held_size} events" if erase_positions else "no longer hash to its root"
        if attack in ("truncate", "delete_chain") and not erase_positions:
            expected = "is missing"  # a position below the checkpoint is gone
        assert expected in caught.output, caught.output


def test_the_published_copy_reveals_deleted_checkpoint_rows(database_url, monkeypatch, tmp_path):
    from app.audit import checkpoints
    from app.audit.models import AuditCheckpoint
    from app.db import get_engine

    with own_database(monkeypatch, tmp_path), api_client() as client:
        headers = key()
        ids = build_log(client, headers, 3)
        checkpoints.run()
        with get_engine().begin() as connection:
            drop_every_trigger(connection)
            rewrite_chain(connection, f"request:{ids[0]}")
            connection.execute(AuditCheckpoint.__table__.delete())
        report = client.get("/v1/audit/verify", headers=key("admin")).json()
        assert report["valid"] is False and report["broken"] == []
        size = checkpoints.published_latest().split("\n")[1]
        assert any(p.startswith(f"published checkpoint: the first {size} events") for p in report["log"]["problems"]), report
        # Refusing to sign over it: the checkpointer does not bless the rewritten log.
        with pytest.raises(checkpoints.LogInconsistent):
            checkpoints.run()


def _refused(statement, params=None) -> bool:
    from app.db import get_engine

    try:
        with get_engine().begin() as connection:
            connection.execute(text(statement), params or {})
    except DBAPIError:
        return True
    return False


def test_triggers_guard_heads_checkpoints_and_log_positions(client, headers):
    from app.audit import checkpoints

    build_log(client, headers, 2)
    sequenced = checkpoints.run()
    assert sequenced
    assert _refused("UPDATE audit_heads SET seq = seq - 1")
    assert _refused("UPDATE audit_heads SET hash = 'x'")
    assert _refused("DELETE FROM audit_heads")
    assert _refused("UPDATE audit_checkpoints SET root_hash = 'x'")
    assert _refused("DELETE FROM audit_checkpoints")
    assert _refused("UPDATE audit_events SET log_index = log_index + 100")
    assert _refused("UPDATE audit_events SET log_index = NULL")
    rid = client.post(URL, json=request_body(identifiers={"email": "guard@example.org"}), headers=headers).json()["id"]
    stream = {"stream": f"request:{rid}"}
    # Setting an unset position is the checkpointer's one write; with any other change, refused.
    assert _refused("UPDATE audit_events SET log_index = 999, actor = 'x' WHERE stream = :stream", stream)
    assert not _refused("UPDATE audit_events SET log_index = 999 WHERE stream = :stream", stream)
    # Forward by one link is what every append does.
    assert approve(client, headers, rid).status_code == 200


@pytest.mark.skipif(not SERVICES, reason="roles and grants are PostgreSQL's")
def test_the_service_runs_as_a_role_that_cannot_drop_triggers(database_url, monkeypatch, tmp_path):
    """Migrations as the owner grant the service role (OBLIVIATE_DB_SERVICE_ROLE); the API, the
    planner, certificates and the checkpointer then work logged in as that role, which cannot
    drop or disable a trigger nor rewrite the log."""
    import uuid

    from sqlalchemy.engine import make_url

    from app import config, db
    from app.audit import checkpoints
    from tests.conftest import TEST_DB_URL

    role, password = f"obliviate_service_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = db.build_engine(TEST_DB_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))
    try:
        with own_database(monkeypatch, tmp_path, DB_SERVICE_ROLE=role) as owner_url:
            service_url = make_url(owner_url).set(username=role, password=password)
            monkeypatch.setenv("OBLIVIATE_DATABASE_URL", service_url.render_as_string(hide_password=False))
            config.reset_settings()
            db.dispose_engine()
            with api_client() as client:
                headers = key()
                build_log(client, headers, 2)
                certified_request(client, headers)
                assert checkpoints.run() == []  # the certificate's commit already checkpointed
                admin_key = key("admin")
                report = client.get("/v1/audit/verify", headers=admin_key).json()
                assert report["valid"] is True and report["log"]["tree_size"] == _count() - 1, report
                assert report["log"]["unanchored_certificates"] == 0
            for statement in ("DROP TRIGGER audit_events_no_update ON audit_events",
                              "ALTER TABLE audit_events DISABLE TRIGGER ALL",
                              "SET session_replication_role = replica",
                              "UPDATE audit_events SET actor = 'forged'",
                              "DELETE FROM audit_checkpoints", "TRUNCATE audit_events", "DELETE FROM audit_heads"):
                assert _refused(statement), f"the service role could: {statement}"
            assert not _refused("SELECT count(*) FROM erasure_requests")
            db.dispose_engine()
            owner = db.build_engine(owner_url)
            with owner.begin() as connection:
                connection.execute(text(f'DROP OWNED BY "{role}"'))
            owner.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
