"""Uploads whose decoded size is far beyond their file size (issue 20, item 2): a JSON Lines file
of many distinct keys, and the Parquet bomb of the first review (a value repeated through
dictionary pages over many row groups). Each is read in a subprocess whose peak memory is held
to a budget."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.security.memory_probe import peak_of_reading
from tests.text_files import upload_text

MiB = 2**20
# Far above what a correct reader of these files needs (a few MiB), far below what the old
# readers took (hundreds of MiB to GB).
PEAK_BUDGET = 96 * MiB


def _key_bomb(lines: int = 300, keys: int = 300) -> bytes:
    """The issue's file: every line has its own `keys` keys besides the two columns (~1.1 MB)."""
    out = []
    for line in range(lines):
        record = {"user_id": f"u{line % 50:03d}", "text": f"note number {line}"}
        record.update({f"k{line}_{key}": key for key in range(keys)})
        out.append(json.dumps(record))
    return ("\n".join(out) + "\n").encode()


def test_a_jsonl_key_bomb_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.jsonl"
    path.write_bytes(_key_bomb())
    # The key bound lifted: what is measured is the streaming reader itself.
    outcome = peak_of_reading("text", path, {"OBLIVIATE_MAX_JSONL_KEYS": "1000000"})
    assert outcome.get("rows") == 300, outcome
    assert outcome["peak_growth_bytes"] < PEAK_BUDGET, outcome


def test_a_jsonl_key_bomb_is_refused_by_the_key_bound(client, make_key):
    response = upload_text(client, make_key("models:write,models:read"), _key_bomb())
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


def _dictionary_bomb(path, *, row_groups: int, rows_per_group: int, value_bytes: int, text: bool) -> None:
    """One long value, dictionary-encoded (one copy per row group) and repeated on every row;
    without statistics, so the footer gives no value length."""
    value = "v" * value_bytes
    schema = pa.schema([("user_id", pa.string()), ("label", pa.int64()), ("text" if text else "feature", pa.string())])
    with pq.ParquetWriter(path, schema, use_dictionary=True, write_statistics=False, compression="zstd") as writer:
        for group in range(row_groups):
            writer.write_table(pa.table({
                "user_id": pa.array([f"u{group}"] * rows_per_group), "label": pa.array([0] * rows_per_group),
                ("text" if text else "feature"): pa.array([value] * rows_per_group),
            }, schema=schema))


@pytest.mark.parametrize("kind", ["text", "tabular"])
def test_the_parquet_dictionary_bomb_is_refused_in_bounded_memory(tmp_path, kind):
    path = tmp_path / "bomb.parquet"
    # 40 row groups × 1,000 rows of a 16 KiB value: 650 MB decoded from a file of a few hundred KB,
    # while the footer's estimate (rows, and the stored sizes) stays within a 64 MiB budget.
    _dictionary_bomb(path, row_groups=40, rows_per_group=1000, value_bytes=16384, text=kind == "text")
    assert path.stat().st_size < 2 * MiB
    outcome = peak_of_reading(kind, path, {"OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES": str(64 * MiB)})
    assert outcome.get("status") in (413, 422), outcome
    assert outcome["peak_growth_bytes"] < PEAK_BUDGET, outcome
