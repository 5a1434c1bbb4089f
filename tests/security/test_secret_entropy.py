"""Guessable secret keys (issue 20, item 11): a key made of repeats, runs or common words is
refused at start outside the embedded default, unless pseudonyms keyed by it are already stored,
in which case it starts with a warning that names the way to a strong key.

Before: all four keys below passed the length and distinct-character checks, and started.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from app.config import GENERATE_SECRET, Settings
from app.secret_strength import MIN_SECRET_BITS, ROTATION_PATH, check_at_start, estimated_bits, secret_weakness
from tests.conftest import TEST_SECRET

GUESSABLE = [
    "12345678901234567890123456789012",
    "abcdefghabcdefghabcdefghabcdefgh",
    "passwordpasswordpasswordpassword1234",
    "my-super-secret-key-for-obliviate",
    "bench-secret-key-0123456789abcdef-0123456789",
    "Admin-Password-Secret-Key-2026-qwertyuiop",
]


@pytest.mark.parametrize("value", GUESSABLE)
def test_guessable_keys_are_found(value):
    assert estimated_bits(value) < MIN_SECRET_BITS
    assert "guessable" in secret_weakness(value)


@pytest.mark.parametrize("value", [secrets.token_hex(16) for _ in range(20)] + [secrets.token_urlsafe(32), TEST_SECRET])
def test_random_keys_are_not(value):
    assert secret_weakness(value) is None


EXTERNAL = "postgresql://obliviate@127.0.0.1:1/obliviate"


@pytest.mark.parametrize("value", GUESSABLE[:4])
def test_a_guessable_key_is_refused_while_nothing_is_keyed_by_it(value, tmp_path):
    with pytest.raises(RuntimeError) as refused:
        check_at_start(Settings(database_url=EXTERNAL, secret_key=value, data_dir=tmp_path))
    assert GENERATE_SECRET in str(refused.value) and value not in str(refused.value)


def test_a_guessable_key_in_use_starts_with_a_warning(monkeypatch, tmp_path, caplog):
    from app import secret_strength

    seen: list[str] = []
    monkeypatch.setattr(secret_strength, "_in_use", lambda url: seen.append(url) or True)
    value = "my-super-secret-key-for-obliviate"
    with caplog.at_level(logging.WARNING, logger="obliviate.secret"):
        check_at_start(Settings(database_url=EXTERNAL, secret_key=value, data_dir=tmp_path))
    assert seen == [EXTERNAL]
    assert ROTATION_PATH in caplog.text and "guessable" in caplog.text and value not in caplog.text


def test_a_key_is_in_use_once_any_pseudonym_is_stored(database_url):
    import uuid

    from app.datasets.models import Tombstone
    from app.db import session_scope, utcnow
    from app.secret_strength import _in_use

    assert not _in_use(database_url)
    with session_scope() as session:
        session.add(Tombstone(client="acme", subject_key="0" * 64, request_id=uuid.uuid4(), created_at=utcnow()))
    assert _in_use(database_url)
    assert not _in_use(EXTERNAL)  # unreachable: nothing can be read, nothing is in use
