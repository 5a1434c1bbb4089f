"""An upload's identifier columns (docs/identity-resolution.md): columns of other identifiers
of each row's subject, such as `{"email": "email"}` (kind → column) beside a `user_id` subject.

They are never features and never stored: every value is pseudonymised with the HMAC of its
kind (app/pseudonym.py, the same function as requests) and kept only as a link from that
pseudonym to the row's subject key, which app/identities/ stores. A missing or blank value is no
identifier; a value that is not a valid identifier of its kind refuses the upload (422), named by
column and record number, never by value."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.datasets.formats import decoded, is_text, plain_type
from app.errors import Unprocessable
from app.pii import find_identifier
from app.pseudonym import KIND_PATTERN, IdentifierError, subject_key

MAX_IDENTIFIER_COLUMNS = 10
# ((identifier kind, its pseudonym), (subject kind, the row's subject key))
Link = tuple[tuple[str, str], tuple[str, str]]


def parse(text: str | None) -> dict[str, str]:
    """The form's `identifier_columns`: a JSON object of kind → column name ("" or absent: none)."""
    if text is None or not text.strip():
        return {}
    try:
        columns = json.loads(text)
    except json.JSONDecodeError:
        columns = None
    if not isinstance(columns, dict) or not all(isinstance(c, str) and c for c in columns.values()):
        raise Unprocessable(
            'identifier_columns is not a JSON object of identifier kind → column name, e.g. {"email": "email"}.')
    if len(columns) > MAX_IDENTIFIER_COLUMNS:
        raise Unprocessable(f"identifier_columns names at most {MAX_IDENTIFIER_COLUMNS} columns.")
    for kind in columns:
        if not KIND_PATTERN.match(kind):
            raise Unprocessable("identifier_columns' kinds are lower-case words (letters, digits, underscore).")
    if any(find_identifier(name) for name in columns.values()):
        raise Unprocessable("A column named in identifier_columns looks like an e-mail address or phone number.")
    return columns


def pseudonymise(
    raw: pa.Array, kind: str, secret: bytes, *, record_numbers: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """The distinct subject keys of a column of raw identifiers, sorted, and each row's position
    among them. Raw values stay in memory; a message names the record number (`record_numbers`
    of the rows given, when they are a selection), never the value."""
    if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
        raw = raw.cast(pa.string())
    # HMAC only the distinct values: subjects usually own many rows each.
    distinct = pc.unique(raw)
    distinct_keys: list[str] = []
    for value in distinct.to_pylist():
        try:
            distinct_keys.append(subject_key(kind, value, secret))
        except IdentifierError as exc:
            position = pc.index(raw, value).as_py()
            record = int(record_numbers[position]) if record_numbers is not None else position + 1
            raise Unprocessable(f"Record {record} (counting from 1, header excluded): {exc}.") from None
    # Different spellings of one identifier ("A@x.org", "a@x.org") are one subject.
    keys = sorted(set(distinct_keys))
    position = {key: i for i, key in enumerate(keys)}
    key_of_distinct = np.fromiter((position[k] for k in distinct_keys), dtype=np.int64, count=len(distinct_keys))
    row_distinct = pc.index_in(raw, value_set=distinct).to_numpy(zero_copy_only=False)
    return keys, key_of_distinct[row_distinct]


def links(
    table: pa.Table, identifier_columns: dict[str, str], subject_kind: str, keys: list[str], key_index: np.ndarray,
    secret: bytes,
) -> list[Link]:
    """Every distinct (identifier pseudonym, subject key) pair of the upload's rows, sorted."""
    found: set[Link] = set()
    for kind, column in sorted(identifier_columns.items()):
        raw = decoded(table.column(column))
        kind_type = plain_type(raw.type)
        if not (is_text(kind_type) or pa.types.is_integer(kind_type)):
            raise Unprocessable(f"The identifier column '{column}' must hold text or integers.")
        raw = raw.cast(pa.string())
        present = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(raw)), 0), False)
        rows = np.flatnonzero(present.to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        identifier_keys, identifier_index = pseudonymise(raw.take(pa.array(rows)), kind, secret, record_numbers=rows + 1)
        for identifier, subject in set(zip(identifier_index.tolist(), key_index[rows].tolist(), strict=True)):
            found.add(((kind, identifier_keys[identifier]), (subject_kind, keys[subject])))
    return sorted(found)
