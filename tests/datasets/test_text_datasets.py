"""Text datasets: per-subject texts uploaded as CSV, Parquet or JSON Lines with `text_column`."""

from __future__ import annotations

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from app.artifacts.store import get_store
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords, Tombstone
from app.db import session_scope, utcnow
from app.pseudonym import subject_key
from tests.dataset_files import artifact_files, digits_table, upload
from tests.dataset_files import csv_bytes as tabular_csv
from tests.text_files import csv_bytes, jsonl_bytes, notes_table, parquet_bytes, upload_text


def counts() -> tuple[int, int, int]:
    with session_scope() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Dataset, DatasetVersion, SubjectRecords))


@pytest.mark.parametrize("encode", [csv_bytes, parquet_bytes, jsonl_bytes], ids=["csv", "parquet", "jsonl"])
def test_text_upload_stores_record_ids_subject_keys_and_the_text(client, writer, encode):
    table = notes_table(subjects=12, per_subject=3, canaries={2: 2})
    r = upload_text(client, writer, encode(table))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rows"], body["subjects"], body["text_column"], body["label_column"]) == (38, 12, "text", None)
    assert body["columns"] == [] and body["classes"] == []
    stored = pq.read_table(io.BytesIO(get_store().get_bytes(body["sha256"])))
    assert stored.column_names == ["record_id", "subject_key", "text"]
    # The text is the training data, stored exactly as uploaded and in upload order.
    assert stored.column("text").to_pylist() == table.column("text").to_pylist()
    assert stored.column("record_id").to_pylist() == list(range(38))
    assert b"u002" not in get_store().get_bytes(body["sha256"])
    assert set(stored.column("subject_key").to_pylist()) == {subject_key("user_id", f"u{i:03d}") for i in range(12)}
    detail = client.get(f"/v1/datasets/{body['dataset_id']}", headers=writer).json()
    assert detail["text_column"] == "text" and detail["versions"][0]["rows"] == 38


def test_a_creator_is_a_subject_kind(client, writer):
    table = notes_table(subjects=3, per_subject=2, kind_column="author")
    r = upload_text(client, writer, csv_bytes(table), subject_column="author", subject_kind="creator")
    assert r.status_code == 201, r.text
    with session_scope() as session:
        keys = set(session.scalars(select(SubjectRecords.subject_key)))
    assert keys == {subject_key("creator", f"u{i:03d}") for i in range(3)}
    # Another kind of the same value is another person.
    assert subject_key("creator", "u000") != subject_key("user_id", "u000")


def test_tombstoned_subjects_are_filtered_and_versions_must_match(client, writer):
    with session_scope() as session:
        session.add(Tombstone(client="acme", subject_key=subject_key("user_id", "u001"), request_id=uuid.uuid4(),
                              created_at=utcnow()))
    table = notes_table(subjects=4, per_subject=2)
    r = upload_text(client, writer, csv_bytes(table))
    assert r.status_code == 201 and r.json()["filtered_rows"] == 2 and r.json()["subjects"] == 3
    assert upload_text(client, writer, jsonl_bytes(table)).json()["version"] == 2
    # Same name, other kind of dataset or other text column: 409.
    assert upload(client, writer, tabular_csv(digits_table(subjects=20)), name="notes").status_code == 409
    renamed = table.rename_columns(["user_id", "body"])
    assert upload_text(client, writer, csv_bytes(renamed), text_column="body").status_code == 409


def _bad_text_files() -> dict[str, tuple[bytes, dict]]:
    table = notes_table(subjects=4, per_subject=2)
    texts = table.column("text").to_pylist()
    empty = table.set_column(1, "text", pa.array(texts[:3] + [""] + texts[4:]))
    numbers = table.set_column(1, "text", pa.array(range(table.num_rows)))
    raw_bytes = table.set_column(1, "text", pa.array([b"\xff\xfe"] * table.num_rows, pa.binary()))
    return {
        "empty text": (parquet_bytes(empty), {}),
        "empty text in csv": (csv_bytes(empty), {}),
        "non-utf-8 bytes": (csv_bytes(table).replace(b"kettle", b"k\xe9ttle").replace(b"lamp", b"l\xe4mp"), {}),
        "non-utf-8 late in the file": (csv_bytes(table) * 2000 + b'u000,"caf\xe9"\n', {}),
        "non-utf-8 jsonl": (jsonl_bytes(table) + b'{"user_id": "u000", "text": "caf\xe9"}\n', {}),
        "binary text column": (parquet_bytes(raw_bytes), {}),
        "text column of numbers": (parquet_bytes(numbers), {}),
        "jsonl numbers": (jsonl_bytes(numbers), {}),
        "text over the limit": (csv_bytes(table.set_column(1, "text", pa.array(["x" * 300] * table.num_rows))), {}),
        "missing text column": (csv_bytes(table), {"text_column": "body"}),
        "both label and text": (csv_bytes(table), {"label_column": "text"}),
        "features on text": (csv_bytes(table), {"feature_columns": "text"}),
        "same column twice": (csv_bytes(table), {"text_column": "user_id"}),
        "null text": (parquet_bytes(table.set_column(1, "text", pa.array([None] + texts[1:], pa.string()))), {}),
    }


@pytest.mark.parametrize("case", list(_bad_text_files()))
def test_bad_text_uploads_are_422_and_store_nothing(client, writer, settings_env, data_dir, case):
    settings_env(MAX_TEXT_BYTES=200)
    content, fields = _bad_text_files()[case]
    before = artifact_files(data_dir)
    r = upload_text(client, writer, content, **fields)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "u001" not in r.text and "kettle" not in r.text
    if case == "text over the limit":
        assert r.json()["detail"].startswith("Record 1 ") and "200 bytes" in r.json()["detail"]
    if case == "empty text":
        assert r.json()["detail"].startswith("Record 4 ")
    assert counts() == (0, 0, 0)
    assert artifact_files(data_dir) == before
    assert not list((data_dir / "tmp").iterdir())


def test_neither_label_nor_text_is_422(client, writer):
    r = upload_text(client, writer, csv_bytes(notes_table(subjects=2)), text_column=None)
    assert r.status_code == 422 and counts() == (0, 0, 0)
