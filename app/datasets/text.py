"""Text datasets: an upload of per-subject texts (CSV, Parquet or JSON Lines) into the stored
file of a dataset version (torch-free).

The stored file is Parquet with the columns
    record_id (int64, 0..n-1 in upload order, kept by later versions), subject_key (HMAC hex),
    text (UTF-8 string).
The subject column is pseudonymised exactly as for tabular data (app.datasets.ingest). The text
is the training data itself: it is stored as uploaded, and the redaction that protects free-text
fields such as reasons does not apply to it. Messages name columns and record numbers, never
text or identifiers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from app.config import get_settings
from app.datasets import identifiers
from app.datasets.formats import (
    CSV_UNPARSABLE, PARQUET_MAGIC, SNIFF_BYTES, check_identifier_columns, csv_header, decoded, is_text, looks_like_text,
    plain_type,
)
from app.datasets.ingest import BuiltVersion, pseudonymise, subject_record_groups, write_version_file
from app.datasets.limits import UploadLimits, check_csv_rows, check_parquet_footer, open_parquet, read_parquet_bounded
from app.errors import Unprocessable
from app.pii import find_identifier

TEXT_COLUMN = "text"
JSONL_UNPARSABLE = (
    "The JSON Lines file could not be parsed: check that every line is one JSON object with the "
    "named columns and that the text is UTF-8."
)


@dataclass(frozen=True)
class TextUploadSpec:
    subject_column: str
    subject_kind: str
    text_column: str
    # Identifier kind → column of other identifiers of the row's subject (app/datasets/identifiers.py).
    identifier_columns: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [self.subject_column, self.text_column, *self.identifier_columns.values()]


@dataclass
class ParsedText:
    keys: list[str]  # distinct subject keys, sorted
    key_index: np.ndarray  # per row: position of its subject key in `keys`
    texts: pa.Array
    links: list[identifiers.Link] = field(default_factory=list)


def read_text_upload(
    path: str | os.PathLike, spec: TextUploadSpec, *, secret: bytes, limits: UploadLimits | None = None,
) -> ParsedText:
    table = read_text_table(path, spec, limits or UploadLimits.from_settings())
    keys, key_index = pseudonymise(decoded(table.column(spec.subject_column)), spec.subject_kind, secret)
    links = identifiers.links(table, spec.identifier_columns, spec.subject_kind, keys, key_index, secret)
    return ParsedText(keys=keys, key_index=key_index, texts=decoded(table.column(spec.text_column)), links=links)


def read_text_table(path: str | os.PathLike, spec: TextUploadSpec, limits: UploadLimits) -> pa.Table:
    _check_names(spec)
    if os.path.getsize(path) == 0:
        raise Unprocessable("The file is empty.")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(PARQUET_MAGIC):
        table = _read_parquet(path, spec, limits)
    elif not looks_like_text(head):
        raise Unprocessable("The file is not Parquet, CSV or JSON Lines in UTF-8.")
    elif head.lstrip().startswith(b"{"):
        table = _read_jsonl(path, spec, limits)
    else:
        table = _read_csv(path, spec, limits)
    _check_values(table, spec)
    return table


def _check_names(spec: TextUploadSpec) -> None:
    if any(find_identifier(name) for name in (spec.subject_column, spec.text_column)):
        raise Unprocessable("A column named in the form looks like an e-mail address or phone number.")
    if spec.subject_column == spec.text_column:
        raise Unprocessable("subject_column and text_column must be different columns.")


def _require(names: list[str], spec: TextUploadSpec) -> None:
    for role, column in (("subject_column", spec.subject_column), ("text_column", spec.text_column)):
        if column not in names:
            raise Unprocessable(f"The {role} '{column}' is not a column of the file.")
    check_identifier_columns(names, spec.identifier_columns, spec.subject_kind, [spec.subject_column, spec.text_column])


def _read_parquet(path, spec: TextUploadSpec, limits: UploadLimits) -> pa.Table:
    parquet, names = open_parquet(path)
    _require(names, spec)
    columns = spec.columns
    check_parquet_footer(parquet.metadata, columns, 0, limits)
    try:
        return read_parquet_bounded(parquet, columns, 0, limits)
    except (pa.ArrowException, OSError):
        raise Unprocessable("The Parquet file could not be read; it may be truncated or damaged.") from None


def _read_csv(path, spec: TextUploadSpec, limits: UploadLimits) -> pa.Table:
    names = csv_header(path, "The file is not Parquet, CSV or JSON Lines in UTF-8.")
    _require(names, spec)
    try:
        check_csv_rows(path, spec.subject_column, 0, limits)
        # Every column stays text: a text that looks like a number is still text, and pyarrow
        # checks that every value is valid UTF-8.
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={column: pa.string() for column in spec.columns},
            include_columns=spec.columns,
            strings_can_be_null=False, quoted_strings_can_be_null=False,
        ))
    except (pa.ArrowException, OSError):
        raise Unprocessable(CSV_UNPARSABLE) from None


def _read_jsonl(path, spec: TextUploadSpec, limits: UploadLimits) -> pa.Table:
    """One line at a time, keeping only the declared columns (subject, text, identifiers). Arrow's own reader makes a
    column of every key any line has, so a file of a few MB with many distinct keys took GB;
    here memory follows the kept values, and a line or a key set over its bound is refused."""
    settings = get_settings()
    max_line, max_keys = settings.max_jsonl_line_bytes, settings.max_jsonl_keys
    kept: dict[str, list[object]] = {column: [] for column in spec.columns}
    keys: set[str] = set()
    text_bytes = rows = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(iter(lambda: handle.readline(max_line + 2), b""), start=1):
            line = line.rstrip(b"\r\n")
            if len(line) > max_line:
                raise Unprocessable(f"Line {number} is longer than {max_line} bytes (OBLIVIATE_MAX_JSONL_LINE_BYTES).")
            if not line.strip():
                continue
            record = _json_object(line)
            keys.update(record)
            if len(keys) > max_keys:
                raise Unprocessable(
                    f"The JSON Lines file has more than {max_keys} distinct keys (OBLIVIATE_MAX_JSONL_KEYS); "
                    "give each line only the subject, text and identifier columns."
                )
            text = record.get(spec.text_column)
            if text is not None and not isinstance(text, str):
                raise Unprocessable(f"The text column '{spec.text_column}' must hold text (strings); "
                                    f"record {rows + 1} (counting from 1) does not.")
            for column, values in kept.items():
                values.append(record.get(column))
            rows += 1
            text_bytes += len(text or "")
            limits.check_rows(rows, at_least=True)
    _require(sorted(keys), spec)
    limits.check_memory(rows, 0, text_bytes)
    try:
        return pa.table({column: pa.array(values, pa.string() if column == spec.text_column else None)
                         for column, values in kept.items()})
    except (pa.ArrowException, OverflowError, TypeError):
        raise Unprocessable(JSONL_UNPARSABLE) from None


def _json_object(line: bytes) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        raise Unprocessable(JSONL_UNPARSABLE) from None
    if not isinstance(record, dict):
        raise Unprocessable(JSONL_UNPARSABLE)
    return record


def _check_values(table: pa.Table, spec: TextUploadSpec) -> None:
    if table.num_rows == 0:
        raise Unprocessable("The file has no rows.")
    subject_type = plain_type(table.column(spec.subject_column).type)
    if not (is_text(subject_type) or pa.types.is_integer(subject_type)):
        raise Unprocessable(f"The subject column '{spec.subject_column}' must hold text or integers.")
    if table.column(spec.subject_column).null_count:
        raise Unprocessable(f"Column '{spec.subject_column}' has empty (null) values.")
    texts = table.column(spec.text_column)
    if not is_text(plain_type(texts.type)):
        raise Unprocessable(f"The text column '{spec.text_column}' must hold text (strings); found {plain_type(texts.type)}.")
    texts = decoded(texts)
    if texts.null_count:
        raise Unprocessable(f"Record {_first(pc.is_null(texts))} (counting from 1) has no text.")
    lengths = pc.binary_length(texts)
    if not pc.all(pc.greater(lengths, 0)).as_py():
        raise Unprocessable(f"Record {_first(pc.equal(lengths, 0))} (counting from 1) has an empty text.")
    limit = get_settings().max_text_bytes
    if pc.max(lengths).as_py() > limit:
        raise Unprocessable(
            f"Record {_first(pc.greater(lengths, limit))} (counting from 1) has a text longer than {limit} bytes "
            "(OBLIVIATE_MAX_TEXT_BYTES)."
        )


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0]) + 1


def build_text_version(parsed: ParsedText, out_path: str | os.PathLike, *, tombstoned: set[str]) -> BuiltVersion:
    """Write the version file without the rows of tombstoned subjects."""
    dropped = np.array([key in tombstoned for key in parsed.keys], dtype=bool)
    keep = ~dropped[parsed.key_index]
    rows = int(keep.sum())
    if rows == 0:
        raise Unprocessable("Every record belongs to an erased subject; nothing is left to store.")
    key_index = parsed.key_index[keep]
    table = pa.table(
        [
            pa.array(np.arange(rows, dtype=np.int64)),
            pa.array(parsed.keys, pa.string()).take(pa.array(key_index)),
            parsed.texts.filter(pa.array(keep)).cast(pa.string()),
        ],
        names=["record_id", "subject_key", TEXT_COLUMN],
    )
    sha = write_version_file(table, out_path)
    groups = subject_record_groups(parsed.keys, key_index, np.arange(rows, dtype=np.int64))
    return BuiltVersion(
        path=Path(out_path), sha256=sha, rows=rows, subjects=len(groups), classes=[],
        filtered_rows=len(keep) - rows, filtered_subjects=int(dropped.sum()), feature_columns=[],
        subject_records=groups,
    )
