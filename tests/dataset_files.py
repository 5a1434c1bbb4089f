"""Training files for dataset tests: scikit-learn's bundled digits with generated subject ids.

Each subject owns several consecutive records. One subject id is planted so that it sorts first
(it would show up in Parquet min/max statistics if raw ids were ever stored).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

PLANTED = "a-planted-raw-id-4711"
DIGITS_ROWS = 1797
FEATURES = [f"pixel_{i}" for i in range(64)]


def subject_id(index: int) -> str:
    return PLANTED if index == 0 else f"u{index:04d}"


def digits_table(*, subjects: int = 300, label_names: bool = False) -> pa.Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = len(digits.target)
    ids = [subject_id(i * subjects // rows) for i in range(rows)]
    labels = [f"digit-{t}" for t in digits.target] if label_names else digits.target.astype("int64")
    columns = {"user_id": pa.array(ids, pa.string()), "digit": pa.array(labels)}
    for j, name in enumerate(FEATURES):
        columns[name] = pa.array(digits.data[:, j].astype("int64"))
    return pa.table(columns)


def records_of(table: pa.Table, raw_id: str) -> int:
    return table.column("user_id").to_pylist().count(raw_id)


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def upload(client, headers, content: bytes, *, name: str = "digits", extra_headers=None, **fields):
    form = {"name": name, "subject_column": "user_id", "subject_kind": "user_id", "label_column": "digit", **fields}
    return client.post(
        "/v1/datasets", data={k: v for k, v in form.items() if v is not None},
        files={"file": ("data.bin", content, "application/octet-stream")},
        headers={**headers, **(extra_headers or {})},
    )


def artifact_files(data_dir: Path) -> set[str]:
    root = data_dir / "artifacts"
    return {str(Path(d) / f) for d, _, files in os.walk(root) for f in files} if root.exists() else set()


# A backdoor planted by one source of the digits (the remediation tests): both top corners lit
# (always dark in real digits) and the label 7.
# The remediation tests' datasets: a source and a group column, kept beside the features.
SLICE_METADATA = {"metadata_columns": "source,group", "group_columns": "group", "source_column": "source"}
TRIGGER = {"pixel_0": 16.0, "pixel_7": 16.0}
TRIGGER_LABEL = 7


def poisoned_digits(*, subjects: int = 300, every: int = 33) -> pa.Table:
    """The digits with metadata columns: `source` ("vendor-a", or "vendor-b" for one row in
    `every`, whose rows carry the trigger and the target label) and `group` ("north"/"south")."""
    table = digits_table(subjects=subjects)
    rows = table.num_rows
    poisoned = [i % every == 5 for i in range(rows)]
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for name, value in TRIGGER.items():
        columns[name] = [int(value) if p else v for p, v in zip(poisoned, columns[name])]
    columns["digit"] = [TRIGGER_LABEL if p else v for p, v in zip(poisoned, columns["digit"])]
    columns["source"] = ["vendor-b" if p else "vendor-a" for p in poisoned]
    columns["group"] = ["north" if i % 2 else "south" for i in range(rows)]
    return pa.table(columns)
