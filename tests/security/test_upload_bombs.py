"""Uploads whose decoded size is far beyond their file size (issue 20, item 2): a JSON Lines file
of many distinct keys, and the Parquet bomb of the first review (a value repeated through
dictionary pages over many row groups). Each is read in a subprocess whose peak memory is held
to a budget."""

from __future__ import annotations

import pytest

from tests.security.memory_probe import MiB, dictionary_bomb, key_bomb, peak_of_reading
from tests.text_files import upload_text

# Far above what a correct reader of these files needs (a few MiB), far below what the old
# readers took (hundreds of MiB to GB).
PEAK_BUDGET = 96 * MiB


def test_a_jsonl_key_bomb_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.jsonl"
    path.write_bytes(key_bomb())
    # The key bound lifted: what is measured is the streaming reader itself.
    outcome = peak_of_reading("text", path, {"OBLIVIATE_MAX_JSONL_KEYS": "1000000"})
    assert outcome.get("rows") == 300, outcome
    assert outcome["peak_growth_bytes"] < PEAK_BUDGET, outcome


def test_a_jsonl_key_bomb_is_refused_by_the_key_bound(client, make_key):
    response = upload_text(client, make_key("models:write,models:read"), key_bomb())
    assert response.status_code == 422, response.text
    assert "OBLIVIATE_MAX_JSONL_KEYS" in response.json()["detail"]
    assert "k0_" not in response.text


def test_a_jsonl_line_over_the_bound_is_refused_with_its_number(client, make_key, settings_env):
    settings_env(MAX_JSONL_LINE_BYTES="1000")
    content = b'{"user_id": "u1", "text": "short"}\n' + b'{"user_id": "u2", "text": "' + b"x" * 5000 + b'"}\n'
    response = upload_text(client, make_key("models:write,models:read"), content)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("Line 2 ") and "OBLIVIATE_MAX_JSONL_LINE_BYTES" in response.json()["detail"]


def test_a_jsonl_nesting_bomb_is_422(client, make_key):
    content = b'{"user_id": "u1", "text": "t", "deep": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    response = upload_text(client, make_key("models:write,models:read"), content)
    assert response.status_code == 422, response.text


def test_well_formed_jsonl_keeps_only_the_declared_columns(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b'{"user_id": "u1", "text": "a", "extra": 1}\n\n{"user_id": "u2", "text": "b"}\n')
    assert peak_of_reading("text", path) == {"rows": 2, "peak_growth_bytes": pytest.approx(0, abs=PEAK_BUDGET)}


@pytest.mark.parametrize("kind", ["text", "tabular"])
def test_the_parquet_dictionary_bomb_is_refused_in_bounded_memory(tmp_path, kind):
    path = tmp_path / "bomb.parquet"
    # 40 row groups × 1,000 rows of a 16 KiB value: 650 MB decoded from a file of a few hundred KB,
    # while the footer's estimate (rows, and the stored sizes) stays within a 64 MiB budget.
    dictionary_bomb(path, row_groups=40, rows_per_group=1000, value_bytes=16384, text=kind == "text")
    assert path.stat().st_size < 2 * MiB
    outcome = peak_of_reading(kind, path, {"OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES": str(64 * MiB)})
    assert outcome.get("status") in (413, 422), outcome
    assert outcome["peak_growth_bytes"] < PEAK_BUDGET, outcome
