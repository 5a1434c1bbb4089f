"""Metadata columns and remediated slices of a dataset (docs/remediation.md).

Metadata columns are stored in a version's Parquet after the features, with their own types,
and never trained on (the loaders read the features by name). A remediated slice stays out of
the dataset: every later upload drops the rows whose content digest is one the slice removed
(so the same records cannot come back), and, where the slice was chosen by a predicate that
does not name `record_id`, every row the predicate selects (so the same source or pattern does
not come back either).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from app.datasets import predicate
from app.errors import Unprocessable
from app.pii import find_identifier

MAX_METADATA_COLUMNS = 50


@dataclass(frozen=True)
class MetadataSpec:
    columns: list[str] = field(default_factory=list)
    # Group columns (special-category data, GDPR Art. 9): reading them is audited.
    groups: list[str] = field(default_factory=list)
    source: str | None = None


def parse_names(text: str | None, what: str) -> list[str]:
    """A form field of column names: comma-separated or a JSON list ("" or absent: none)."""
    if text is None or not text.strip():
        return []
    text = text.strip()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise Unprocessable(f"{what} is not a JSON list of column names.")
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    if len(names) > MAX_METADATA_COLUMNS:
        raise Unprocessable(f"{what} names at most {MAX_METADATA_COLUMNS} columns.")
    if any(find_identifier(name) for name in names):
        raise Unprocessable(f"A column named in {what} looks like an e-mail address or phone number.")
    return names


def metadata_spec(columns: str | None, groups: str | None, source: str | None) -> MetadataSpec:
    names = parse_names(columns, "metadata_columns")
    group_names = parse_names(groups, "group_columns")
    source = source.strip() if source and source.strip() else None
    if any(name not in names for name in group_names):
        raise Unprocessable("Every group column must also be a metadata column.")
    if source is not None and source not in names:
        raise Unprocessable("The source column must also be a metadata column.")
    return MetadataSpec(names, group_names, source)


def fingerprints(table: pa.Table, features: Sequence[str], classes: Sequence[Any]) -> list[str]:
    """Each row's content digest: its subject key, its label value and its feature values (what a
    re-upload of the same record repeats; record ids are renumbered by every upload)."""
    if table.num_rows == 0:
        return []
    matrix = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in features]) \
        if features else np.zeros((table.num_rows, 0), np.float32)
    keys = table.column("subject_key").to_pylist()
    labels = table.column("label").to_pylist()
    out = []
    for key, label, row in zip(keys, labels, matrix, strict=True):
        value = classes[label] if label is not None and 0 <= label < len(classes) else None
        digest = hashlib.sha256(f"{key}\x00{json.dumps(value)}\x00".encode() + row.tobytes())
        out.append(digest.hexdigest()[:32])
    return out


def excluded_rows(filters: Sequence[dict[str, Any]], metadata: Sequence[str], features: Sequence[str],
                  label: str) -> Any:
    """The `excluded` callback of `ingest.build_version` for a dataset's slice filters; None
    without any."""
    if not filters:
        return None

    def excluded(table: pa.Table, classes: list[Any]) -> np.ndarray:
        drop = np.zeros(table.num_rows, dtype=bool)
        known = {digest for entry in filters for digest in entry.get("fingerprints") or ()}
        if known:
            drop |= np.array([digest in known for digest in fingerprints(table, features, classes)], dtype=bool)
        schema = predicate.schema_of(table.schema, metadata=metadata, features=features, label=label, classes=classes)
        for entry in filters:
            text = entry.get("predicate")
            if text:
                node = predicate.compile_predicate(text, schema)
                drop |= np.asarray(predicate.evaluate(node, table, schema).to_numpy(zero_copy_only=False), dtype=bool)
        return drop

    return excluded
