"""Dataset uploads are bounded by rows and by a memory budget checked before the file is
decoded, and features that float32 cannot hold are refused (issue 9, item 5)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.db import session_scope
from tests.dataset_files import DIGITS_ROWS, artifact_files, csv_bytes, digits_table, parquet_bytes, upload


@pytest.fixture(scope="module")
def table():
    return digits_table(subjects=50)


@pytest.fixture
def never_decoded(monkeypatch):
    """Fail the test if an upload is decoded in full: the limits must refuse it before."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the whole file was decoded")

    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    monkeypatch.setattr(pacsv, "read_csv", refuse)


def nothing_stored(data_dir, before) -> bool:
    with session_scope() as session:
        rows = [session.scalar(select(func.count()).select_from(t)) for t in (Dataset, DatasetVersion, SubjectRecords)]
    return rows == [0, 0, 0] and artifact_files(data_dir) == before and not list((data_dir / "tmp").iterdir())


def constant_rows_parquet(path, rows: int, group: int = 1_000_000) -> bytes:
    """The reported file: millions of equal rows, a few hundred KB on disk."""
    schema = pa.schema([("user_id", pa.string()), ("digit", pa.int64()), ("x", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            writer.write_table(pa.table([pa.repeat("u1", n), pa.repeat(1, n), pa.repeat(0.5, n)], schema=schema))
    return path.read_bytes()


def test_tiny_parquet_of_twenty_million_rows_is_413_before_reading(client, writer, data_dir, tmp_path, never_decoded):
    content = constant_rows_parquet(tmp_path / "many.parquet", 20_000_000)
    assert len(content) < 1_000_000
    before = artifact_files(data_dir)
    r = upload(client, writer, content, name="many")
    assert r.status_code == 413, r.text
    assert r.json()["type"].endswith("payload-too-large")
    assert "OBLIVIATE_MAX_DATASET_ROWS" in r.json()["detail"]
    assert nothing_stored(data_dir, before)


# Each limit, set just below the digits table, and what its 413 names.
LIMITS = {
    "rows": ({"MAX_DATASET_ROWS": DIGITS_ROWS - 1}, "rows"),
    "memory": ({"MAX_UPLOAD_MEMORY_BYTES": 1_000_000}, "OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES"),
}


@pytest.mark.parametrize("limit", sorted(LIMITS))
@pytest.mark.parametrize("render", [csv_bytes, parquet_bytes], ids=["csv", "parquet"])
def test_a_file_over_a_limit_is_refused_and_nothing_stored(client, writer, settings_env, data_dir, table, render,
                                                           never_decoded, limit):
    overrides, named = LIMITS[limit]
    settings_env(**overrides)
    before = artifact_files(data_dir)
    r = upload(client, writer, render(table))
    assert r.status_code == 413, r.text
    assert named in r.json()["detail"]
    assert nothing_stored(data_dir, before)


@pytest.mark.parametrize("render", [csv_bytes, parquet_bytes], ids=["csv", "parquet"])
def test_a_file_at_the_limits_is_accepted(client, writer, settings_env, table, render):
    settings_env(MAX_DATASET_ROWS=DIGITS_ROWS, MAX_UPLOAD_MEMORY_BYTES=64 * 2**20)
    r = upload(client, writer, render(table))
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == DIGITS_ROWS


def test_csv_row_count_stops_at_the_limit(client, writer, settings_env, data_dir, tmp_path, monkeypatch):
    """The streaming count gives up at the first block past the limit, not at the end of the file."""
    import app.datasets.limits as limits

    blocks = []
    real = limits.pacsv.open_csv

    def counting(*args, **kwargs):
        reader = real(*args, **kwargs)
        return _Counting(reader, blocks)

    monkeypatch.setattr(limits.pacsv, "open_csv", counting)
    settings_env(MAX_DATASET_ROWS=10)
    content = b"user_id,digit,x\n" + b"u1,1,0.5\n" * 2_000_000
    r = upload(client, writer, content, name="long")
    assert r.status_code == 413, r.text
    assert 1 <= len(blocks) < 3
    assert sum(blocks) < 2_000_000


class _Counting:
    def __init__(self, reader, blocks):
        self.reader, self.blocks, self.schema = reader, blocks, reader.schema

    def __iter__(self):
        for batch in self.reader:
            self.blocks.append(batch.num_rows)
            yield batch

    def close(self):
        self.reader.close()


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
@pytest.mark.parametrize("render", [csv_bytes, parquet_bytes], ids=["csv", "parquet"])
def test_features_beyond_float32_are_422(client, writer, data_dir, table, render, value):
    values = np.array(table.column("pixel_3").to_numpy(), dtype=np.float64)
    values[7] = value
    overflowing = table.set_column(table.schema.get_field_index("pixel_3"), "pixel_3", pa.array(values))
    before = artifact_files(data_dir)
    r = upload(client, writer, render(overflowing))
    assert r.status_code == 422, r.text
    assert "'pixel_3'" in r.json()["detail"] and "float32" in r.json()["detail"]
    assert nothing_stored(data_dir, before)


def test_largest_float32_is_accepted(client, writer, table):
    values = np.array(table.column("pixel_3").to_numpy(), dtype=np.float64)
    values[7] = float(np.finfo(np.float32).max)
    edge = table.set_column(table.schema.get_field_index("pixel_3"), "pixel_3", pa.array(values))
    assert upload(client, writer, parquet_bytes(edge)).status_code == 201
