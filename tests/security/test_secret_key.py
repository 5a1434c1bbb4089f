"""OBLIVIATE_SECRET_KEY: weak values are refused outside the embedded default, and an accepted
key keys pseudonyms exactly as before (its bytes and the normalisation are frozen)."""

from __future__ import annotations

import secrets

import pytest
from typer.testing import CliRunner

from app.config import GENERATE_SECRET, Settings
from app.pseudonym import subject_key
from tests.conftest import TEST_SECRET

EXTERNAL = "postgresql://obliviate@127.0.0.1:1/obliviate"
# Computed with the code before this check existed: an accepted key must keep giving it.
FROZEN_KEY = "8e6b9a7be9ba0a3cd15a8deb1fa1709157c7cb5490e128db71a72b3f76246f37"
FROZEN_PSEUDONYM = "c0802eaa5ea70012476ed4bddac0f76a7d7ef7375e4caf294d26a74d4e437d54"

WEAK = [
    "a", "123456", "password", "secret", "change-me", "Change_Me", "obliviate", "",
    "0123456789abcdef",  # 16 hex characters: 64 bits
    secrets.token_hex(15),  # 30 characters
    "a" * 64,  # long, but a pattern
    "please-change-me-before-going-live-0123456789",  # long, but a placeholder
    "replace-me-with-a-real-secret-key-for-production",
]


@pytest.mark.parametrize("value", WEAK)
def test_weak_secret_is_refused_with_an_external_database(value, tmp_path):
    settings = Settings(database_url=EXTERNAL, secret_key=value, data_dir=tmp_path)
    with pytest.raises(RuntimeError) as refused:
        settings.resolved_secret_key()
    assert GENERATE_SECRET in str(refused.value)
    assert len(value) < 16 or value not in str(refused.value)  # the error does not echo the key


@pytest.mark.parametrize("value", [
    secrets.token_hex(32), secrets.token_hex(16), secrets.token_urlsafe(32), TEST_SECRET,
    "pnZEip4RAIyXqfEDx976DOdCQO+jKZij5YIdCb9CKGE=",  # openssl rand -base64 32
    "bench-k7Qm2vX9LpT4rw8ZnB1c6F3hJd5G0sYe",
])
def test_strong_secret_is_accepted_and_used_as_given(value, tmp_path):
    settings = Settings(database_url=EXTERNAL, secret_key=value, data_dir=tmp_path)
    assert settings.resolved_secret_key() == value.encode()


def test_accepted_key_keys_pseudonyms_as_before(tmp_path):
    key = Settings(database_url=EXTERNAL, secret_key=FROZEN_KEY, data_dir=tmp_path).resolved_secret_key()
    assert subject_key("email", " Jane.Doe@Example.org ", key) == FROZEN_PSEUDONYM


def test_embedded_default_generates_and_keeps_its_key(tmp_path):
    first = Settings(data_dir=tmp_path, database_url="", secret_key="").resolved_secret_key()
    again = Settings(data_dir=tmp_path, database_url="", secret_key="change-me").resolved_secret_key()
    assert first == again == (tmp_path / "secret.key").read_text().strip().encode()
    assert len(first) == 64


# The second: long enough and varied, but guessable (issue 20, item 11; test_secret_entropy.py).
@pytest.mark.parametrize("value, problem", [("123456", "placeholder"), ("my-super-secret-key-for-obliviate", "guessable")])
def test_api_and_cli_refuse_to_start_with_a_weak_key(monkeypatch, tmp_path, value, problem):
    from app.cli import cli
    from app.config import reset_settings
    from app.main import create_app

    monkeypatch.setenv("OBLIVIATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OBLIVIATE_DATABASE_URL", EXTERNAL)
    monkeypatch.setenv("OBLIVIATE_SECRET_KEY", value)
    reset_settings()
    try:
        with pytest.raises(RuntimeError, match="token_hex") as refused:
            create_app()
        assert problem in str(refused.value)
        result = CliRunner().invoke(cli, ["requests", "import", str(_jsonl(tmp_path))])
        assert result.exit_code == 2
        assert "token_hex" in result.output and problem in result.output
    finally:
        monkeypatch.undo()
        reset_settings()


def _jsonl(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("{}\n")
    return path
