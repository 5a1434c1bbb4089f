"""The audit chains: valid after work, tamper detection (online and offline), append-only table."""

from __future__ import annotations

import copy
import json
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from tests import objects
from tests.factories import trail
from tests.conftest import drop_sqlite_guards, restore_sqlite_guards

URL = "/v1/erasure-requests"


request_body = partial(objects.request_body, "audit")


def worked_request(client, headers) -> str:
    """A request with four events: received, held, released, approved."""
    rid = client.post(URL, json=request_body(), headers=headers).json()["id"]
    assert client.post(f"{URL}/{rid}/hold", json={"reason": "check"}, headers=headers).status_code == 200
    assert client.post(f"{URL}/{rid}/release", headers=headers).status_code == 200
    assert objects.approve(client, headers, rid).status_code == 200
    return rid


@contextmanager
def bypassing_guards():
    """A connection that may rewrite audit history, as an attacker with database access could."""
    from app.db import get_engine

    engine = get_engine()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield connection
            return
        drop_sqlite_guards(connection)
        yield connection
        restore_sqlite_guards(connection)


def stream_of(rid: str) -> str:
    return f"request:{rid}"


def edit_data(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(update(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 2).values(
        data={"from": "received", "to": "on_hold", "reason": "nothing to see"}))


def edit_actor(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(update(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 4).values(actor="key:someone-else"))


def edit_time(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(update(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 1).values(
        at=datetime(2020, 1, 1, tzinfo=UTC)))


def drop_middle(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(delete(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 2))


def drop_first(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(delete(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 1))


def reorder(connection, stream):
    from app.audit.models import AuditEvent

    def move(old, new):
        connection.execute(update(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == old).values(seq=new))

    move(2, -1)
    move(3, 2)
    move(-1, 3)


def truncate_tail(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(delete(AuditEvent).where(AuditEvent.stream == stream, AuditEvent.seq == 4))


def drop_all_events(connection, stream):
    from app.audit.models import AuditEvent

    connection.execute(delete(AuditEvent).where(AuditEvent.stream == stream))


def drop_head(connection, stream):
    from app.audit.models import AuditHead

    connection.execute(delete(AuditHead).where(AuditHead.stream == stream))


TAMPERINGS = [edit_data, edit_actor, edit_time, drop_middle, drop_first, reorder, truncate_tail, drop_all_events, drop_head]


def test_chain_is_valid_after_a_series_of_transitions(client, headers, admin):
    rid = worked_request(client, headers)
    client.post(f"{URL}/{rid}/extend", json={"days": 7, "reason": "more time"}, headers=headers)
    other = client.post(URL, json=request_body(), headers=headers).json()["id"]
    client.post(f"{URL}/{other}/deny", json={"reason": "no"}, headers=headers)

    chain = trail(client, headers, rid)
    events = chain["events"]
    assert [e["type"] for e in events] == [
        "request.received", "request.held", "request.released", "request.approved", "request.extended",
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev_hash"] == "0" * 64
    for previous, event in zip(events, events[1:]):
        assert event["prev_hash"] == previous["hash"]
    assert len({e["hash"] for e in events}) == 5
    assert chain["chain_valid"] is True and chain["head"] == events[-1]["hash"]
    assert chain["request_id"] == rid

    report = client.get("/v1/audit/verify", headers=admin)
    assert report.status_code == 200
    # Two request chains (5 + 2 events) and the chains of the two keys (key.created each).
    assert report.json() == {
        "valid": True, "chains": 4, "events": 9, "broken": [], "first_broken": None,
        # No checkpointer ran: the events await their log positions, and nothing is anchored yet.
        "log": {"valid": True, "tree_size": 0, "unsequenced": 9, "checkpoints": 0, "latest_checkpoint": None,
                "certificates": 0, "unanchored_certificates": 0, "problems": []},
    }


def test_verify_needs_the_admin_scope(client, make_key):
    for scopes in ("requests:read", "requests:read,requests:write,requests:review"):
        response = client.get("/v1/audit/verify", headers=make_key(scopes))
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/audit/verify").status_code == 401


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__)
def test_tampering_is_detected(client, headers, admin, tamper):
    rid = worked_request(client, headers)
    untouched = worked_request(client, headers)
    assert client.get("/v1/audit/verify", headers=admin).json()["valid"] is True

    with bypassing_guards() as connection:
        tamper(connection, stream_of(rid))

    report = client.get("/v1/audit/verify", headers=admin).json()
    assert report["valid"] is False
    assert [b["stream"] for b in report["broken"]] == [stream_of(rid)]
    assert report["first_broken"]["stream"] == stream_of(rid)
    assert report["first_broken"]["problem"]
    assert trail(client, headers, rid)["chain_valid"] is False
    assert trail(client, headers, untouched)["chain_valid"] is True


def test_broken_link_is_located(client, headers, admin):
    rid = worked_request(client, headers)
    with bypassing_guards() as connection:
        edit_actor(connection, stream_of(rid))
    broken = client.get("/v1/audit/verify", headers=admin).json()["first_broken"]
    assert broken["seq"] == 4
    chain = trail(client, headers, rid)
    assert chain["problem"]


def test_events_cannot_be_updated_or_deleted(client, headers):
    from app.audit.models import AuditEvent
    from app.db import get_engine

    rid = worked_request(client, headers)
    engine = get_engine()
    attempts = [
        update(AuditEvent).where(AuditEvent.stream == stream_of(rid)).values(actor="key:forged"),
        update(AuditEvent).where(AuditEvent.stream == stream_of(rid), AuditEvent.seq == 4).values(seq=9),
        delete(AuditEvent).where(AuditEvent.stream == stream_of(rid), AuditEvent.seq == 4),
        delete(AuditEvent),
    ]
    if engine.dialect.name == "postgresql":
        attempts.append(text("TRUNCATE audit_events"))
    for statement in attempts:
        with pytest.raises(DBAPIError):
            with engine.begin() as connection:
                connection.execute(statement)
    chain = trail(client, headers, rid)
    assert len(chain["events"]) == 4 and chain["chain_valid"] is True
    assert {e["actor"] for e in chain["events"]} != {"key:forged"}


def test_exported_chain_verifies_offline(client, headers):
    from app.audit.chain import verify_chain

    rid = worked_request(client, headers)
    chain = trail(client, headers, rid)
    exported = json.loads(json.dumps(chain["events"]))
    stream = stream_of(rid)
    head = (len(exported), chain["head"])

    result = verify_chain(stream, exported, head)
    assert result.valid and result.length == 4 and result.head == chain["head"]
    assert verify_chain(f"request:{uuid.uuid4()}", exported).valid is False

    edited = copy.deepcopy(exported)
    edited[1]["data"]["reason"] = "something else"
    assert (verify_chain(stream, edited, head).valid, verify_chain(stream, edited, head).broken_at_seq) == (False, 2)

    dropped = exported[:1] + exported[2:]
    assert verify_chain(stream, dropped, head).valid is False

    swapped = copy.deepcopy(exported)
    swapped[1]["seq"], swapped[2]["seq"] = 3, 2
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert verify_chain(stream, swapped, head).valid is False

    truncated = exported[:3]
    assert verify_chain(stream, truncated).valid is True  # a chain alone cannot see a cut tail ...
    assert verify_chain(stream, truncated, head).valid is False  # ... its recorded head can

    retimed = copy.deepcopy(exported)
    retimed[0]["at"] = "2020-01-01T00:00:00Z"
    assert verify_chain(stream, retimed, head).valid is False


@pytest.mark.parametrize("microsecond", [0, 120000, 5])
def test_offline_verification_survives_json_rendering_of_times(microsecond):
    """The API renders `at` as JSON; an exported chain must verify whatever digits that drops."""
    from app.audit.chain import GENESIS, event_hash, verify_chain
    from app.requests.schemas import AuditEventOut

    stream, prev, events = "request:offline", GENESIS, []
    for seq in (1, 2):
        at = datetime(2026, 3, 1, 12, 0, seq, microsecond, tzinfo=UTC)
        data = {"n": seq}
        digest = event_hash(prev, stream, seq, "request.received", at, "key:k", data)
        events.append(AuditEventOut(seq=seq, type="request.received", at=at, actor="key:k", data=data, prev_hash=prev, hash=digest))
        prev = digest
    exported = json.loads(json.dumps([e.model_dump(mode="json") for e in events]))
    assert verify_chain(stream, exported, (2, prev)).valid is True


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(stream=_TEXT, seq=st.integers(min_value=1, max_value=10**12), type_=_TEXT, actor=_TEXT, data=_JSON,
       at=st.datetimes(timezones=st.just(UTC)))
def test_event_hash_written_around_the_data_json_equals_the_canonical_form(stream, seq, type_, actor, data, at):
    """Intake serialises an event's data once and writes the hashed event around it; that must
    be byte for byte the canonical JSON of the whole event, or stored chains would not verify."""
    from app.audit.chain import canonical_event, canonical_json, format_time

    whole = {"stream": stream, "seq": seq, "type": type_, "at": format_time(at), "actor": actor, "data": data}
    assert canonical_event(stream, seq, type_, at, actor, canonical_json(data)) == canonical_json(whole)
