"""The embedded broker (kombu's SQLAlchemy transport on SQLite) when two processes create the same
queue at once: the one that loses the race must still send, and keep its channel usable."""

from __future__ import annotations

import pytest
from kombu import Connection
from kombu.transport import sqlalchemy as transport


@pytest.fixture
def broker(tmp_path):
    from app import queue

    queue._tolerate_concurrent_queue_creation()
    with Connection(f"sqla+sqlite:///{tmp_path / 'broker.db'}") as ours, \
            Connection(f"sqla+sqlite:///{tmp_path / 'broker.db'}") as theirs:
        yield ours.default_channel, theirs.default_channel


def test_losing_the_race_to_create_a_queue_still_sends(broker, monkeypatch):
    ours, theirs = broker
    theirs._new_queue("inference")  # the other process created it first ...
    # ... after our look-up had found nothing: the insert that follows collides with its row.
    real = ours.session.query
    stale = {"left": 2}  # kombu looks twice (before and under its lock) before inserting

    def query(*entities):
        found = real(*entities)
        if entities == (ours.queue_cls,) and stale["left"]:
            stale["left"] -= 1
            return _Nothing(found)
        return found

    monkeypatch.setattr(ours.session, "query", query)
    ours._put("inference", {"body": "hello"})
    monkeypatch.undo()
    assert stale["left"] == 0  # the collision really happened
    # One queue row, our message in it, and a session that still works.
    assert ours.session.query(ours.queue_cls).filter(ours.queue_cls.name == "inference").count() == 1
    assert theirs._get("inference") == {"body": "hello"}
    ours._put("inference", {"body": "again"})
    assert theirs._get("inference") == {"body": "again"}


class _Nothing:
    """A query whose filter finds no row, as a read made just before another process's insert."""

    def __init__(self, query):
        self._query = query

    def filter(self, *criteria):
        return self

    def first(self):
        return None


def test_the_tolerance_is_installed_once():
    from app import queue

    queue._tolerate_concurrent_queue_creation()
    installed = transport.Channel._get_or_create
    queue._tolerate_concurrent_queue_creation()
    assert transport.Channel._get_or_create is installed and transport.Channel._obliviate_tolerant
