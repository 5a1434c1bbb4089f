"""Turning an upload into the stored file of a dataset version (torch-free).

The stored file is Parquet with the columns
    record_id (int64, 0..n-1 in upload order, kept by later versions), subject_key (HMAC hex),
    label (int64 class index), then the features as float32 under their own names.
Raw subject values are only ever held in memory here: they are pseudonymised with the same HMAC
as request identifiers (app.pseudonym) and dropped before anything is written.

Two phases, so that the expensive one needs no database: `read_upload` parses, validates and
pseudonymises; `build_version` (given the client's tombstones and the dataset's classes, read in
the caller's transaction) filters, encodes labels and writes the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.artifacts.store import ArtifactStore, sha256_file
from app.datasets import identifiers
from app.datasets.formats import MAX_CLASSES, UploadSpec, decoded, read_checked_table
from app.datasets.identifiers import pseudonymise
from app.errors import Conflict, Unprocessable
from app.pii import find_identifier

__all__ = [
    "UploadSpec", "ParsedUpload", "pseudonymise", "BuiltVersion", "read_upload", "build_version",
    "write_version_file", "read_version_table", "subject_record_groups",
]


@dataclass
class ParsedUpload:
    feature_columns: list[str]
    keys: list[str]  # distinct subject keys, sorted
    key_index: np.ndarray  # per row: position of its subject key in `keys`
    labels: pa.Array
    features: list[pa.Array]
    # The identifier columns' pseudonyms, each linked to its row's subject key.
    links: list[identifiers.Link] = field(default_factory=list)


@dataclass
class BuiltVersion:
    path: Path
    sha256: str
    rows: int
    subjects: int
    classes: list[Any]
    filtered_rows: int
    filtered_subjects: int
    feature_columns: list[str]
    # The lineage index of this file: (subject_key, record_ids), sorted by key.
    subject_records: list[tuple[str, list[int]]] = field(repr=False)


def read_upload(path: str | os.PathLike, spec: UploadSpec, *, secret: bytes) -> ParsedUpload:
    table, features = read_checked_table(path, spec)
    keys, key_index = pseudonymise(decoded(table.column(spec.subject_column)), spec.subject_kind, secret)
    return ParsedUpload(
        feature_columns=features,
        keys=keys,
        key_index=key_index,
        labels=decoded(table.column(spec.label_column)),
        features=[decoded(table.column(name)) for name in features],
        links=identifiers.links(table, spec.identifier_columns, spec.subject_kind, keys, key_index, secret),
    )


def build_version(
    parsed: ParsedUpload, out_path: str | os.PathLike, *, tombstoned: set[str], classes: list[Any] | None = None,
) -> BuiltVersion:
    """Write the version file: rows of tombstoned subjects dropped, labels encoded against
    `classes` (a dataset's existing classes, whose indices must not move) or against the sorted
    distinct labels of a new dataset."""
    dropped = np.array([key in tombstoned for key in parsed.keys], dtype=bool)
    keep = ~dropped[parsed.key_index]
    rows = int(keep.sum())
    if rows == 0:
        raise Unprocessable("Every record belongs to an erased subject; nothing is left to store.")
    mask = pa.array(keep)
    labels = parsed.labels.filter(mask)
    if pa.types.is_boolean(labels.type):
        labels = labels.cast(pa.int64())
    classes = label_classes(labels, classes)
    label_index = pc.index_in(labels, value_set=pa.array(classes, type=labels.type)).cast(pa.int64())
    key_index = parsed.key_index[keep]
    keys = pa.array(parsed.keys, pa.string())
    table = pa.table(
        [
            pa.array(np.arange(rows, dtype=np.int64)),
            keys.take(pa.array(key_index)),
            label_index,
            *[values.filter(mask).cast(pa.float32(), safe=False) for values in parsed.features],
        ],
        names=["record_id", "subject_key", "label", *parsed.feature_columns],
    )
    sha = write_version_file(table, out_path)
    groups = subject_record_groups(parsed.keys, key_index, np.arange(rows, dtype=np.int64))
    return BuiltVersion(
        path=Path(out_path), sha256=sha, rows=rows, subjects=len(groups), classes=classes,
        filtered_rows=len(keep) - rows, filtered_subjects=int(dropped.sum()),
        feature_columns=list(parsed.feature_columns), subject_records=groups,
    )


def label_classes(labels: pa.Array, known: list[Any] | None) -> list[Any]:
    """The classes of a new dataset's labels (sorted), or the dataset's `known` classes, which
    must hold every label."""
    present = pc.unique(labels).to_pylist()
    if known is None:
        if len(present) > MAX_CLASSES:
            raise Unprocessable(
                f"The label column has {len(present)} distinct values; at most {MAX_CLASSES} classes are allowed."
            )
        # The classes are stored as the dataset's metadata and returned with every prediction.
        if any(isinstance(label, str) and find_identifier(label) for label in present):
            raise Unprocessable("A label value looks like an e-mail address or phone number; labels must be classes, not people.")
        return sorted(present)
    unknown = set(present) - set(known)
    if unknown:
        raise Conflict(
            f"The label column has {len(unknown)} value(s) that are not among this dataset's classes; "
            "upload it under a new name to change the classes."
        )
    return list(known)


def subject_record_groups(
    keys: list[str], key_index: np.ndarray, record_ids: np.ndarray,
) -> list[tuple[str, list[int]]]:
    """(subject_key, record_ids in file order) for every subject with rows, sorted by key."""
    order = np.argsort(key_index, kind="stable")
    grouped = key_index[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ends = np.r_[starts[1:], len(grouped)]
    ids = record_ids[order].tolist()
    firsts = grouped[starts].tolist()
    return [(keys[g], ids[s:e]) for g, s, e in zip(firsts, starts.tolist(), ends.tolist(), strict=True)]


def write_version_file(table: pa.Table, out_path: str | os.PathLike) -> str:
    """Write a version table with fixed options and answer its sha256. Same table and same
    pyarrow, same bytes: a re-run of an erasure produces the same artifact key."""
    pq.write_table(table, out_path, compression="zstd", write_statistics=True)
    return sha256_file(out_path)


def read_version_table(store: ArtifactStore, sha: str, columns: list[str] | None = None) -> pa.Table:
    """A dataset version's table, read after the file's hash was checked."""
    with store.open_verified(sha) as handle:
        return pq.read_table(handle, columns=columns)
