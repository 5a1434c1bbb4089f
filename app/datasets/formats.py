"""Reading an uploaded file (Parquet or CSV) into an Arrow table, and checking its shape.

Error messages name columns and record numbers, never cell values: the subject column holds
raw identifiers, and Arrow's own messages quote the offending line, so they are not passed on.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from app.datasets.limits import (
    UploadLimits,
    check_csv_rows,
    check_float32_range,
    check_parquet_footer,
    open_parquet,
    read_parquet_bounded,
)
from app.errors import Unprocessable
from app.pii import find_identifier

PARQUET_MAGIC = b"PAR1"
MAX_COLUMNS = 10_000
MAX_CLASSES = 10_000
# Names of the stored file's own columns; a feature may not take one of them.
RESERVED_COLUMNS = ("record_id", "subject_key", "label")
SNIFF_BYTES = 64 * 1024
CSV_UNPARSABLE = (
    "The CSV file could not be parsed: check that every row has the header's number of "
    "columns, that quotes are balanced and that the text is UTF-8."
)


@dataclass(frozen=True)
class UploadSpec:
    subject_column: str
    subject_kind: str
    label_column: str
    # None: every column except the subject, label and identifier columns, in file order.
    feature_columns: list[str] | None = None
    # Identifier kind → column of other identifiers of the row's subject (app/datasets/identifiers.py).
    identifier_columns: dict[str, str] = field(default_factory=dict)
    # Columns stored beside the features and never trained on (source, group…), any type; usable
    # in remediation predicates (docs/remediation.md).
    metadata_columns: list[str] = field(default_factory=list)


def read_checked_table(
    path: str | os.PathLike, spec: UploadSpec, limits: UploadLimits | None = None,
) -> tuple[pa.Table, list[str]]:
    """The subject, label and feature columns of the upload, validated; and the feature names.
    Over the row limit or the memory budget (app.datasets.limits) → 413 before decoding."""
    limits = limits or UploadLimits.from_settings()
    if os.path.getsize(path) == 0:
        raise Unprocessable("The file is empty.")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(PARQUET_MAGIC):
        table, features = _read_parquet(path, spec, limits)
    elif looks_like_text(head):
        table, features = _read_csv(path, spec, limits)
    else:
        raise Unprocessable("The file is not Parquet or CSV.")
    _check_values(table, spec, features)
    return table, features


def looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        # Incremental, so a multi-byte character cut at the end of the sample is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _read_parquet(path, spec: UploadSpec, limits: UploadLimits) -> tuple[pa.Table, list[str]]:
    parquet, names = open_parquet(path)
    features = resolve_columns(names, spec)
    columns = [spec.subject_column, spec.label_column, *features, *spec.identifier_columns.values(),
               *spec.metadata_columns]
    check_parquet_footer(parquet.metadata, columns, len(features), limits)
    try:
        table = read_parquet_bounded(parquet, columns, len(features), limits)
    except (pa.ArrowException, OSError):
        raise Unprocessable("The Parquet file could not be read; it may be truncated or damaged.") from None
    return table, features


def csv_header(path, unreadable: str) -> list[str]:
    """The CSV file's column names, read alone first so that a bad column set is refused before
    the whole file is parsed; Unprocessable(`unreadable`) where it is not CSV."""
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20))
        names = reader.schema.names
        reader.close()
    except (pa.ArrowException, OSError):
        raise Unprocessable(unreadable) from None
    return list(names)


def _read_csv(path, spec: UploadSpec, limits: UploadLimits) -> tuple[pa.Table, list[str]]:
    features = resolve_columns(csv_header(path, "The file is not Parquet or CSV."), spec)
    try:
        check_csv_rows(path, spec.subject_column, len(features), limits)
    except (pa.ArrowException, OSError):
        raise Unprocessable(CSV_UNPARSABLE) from None
    # Subject ids and other identifiers stay text: inferred as integers, "007" would become 7.
    identifier_columns = list(spec.identifier_columns.values())
    convert = pacsv.ConvertOptions(
        column_types={column: pa.string() for column in (spec.subject_column, *identifier_columns)},
        include_columns=[spec.subject_column, spec.label_column, *features, *identifier_columns,
                         *spec.metadata_columns],
    )
    try:
        table = pacsv.read_csv(path, convert_options=convert)
    except (pa.ArrowException, OSError):
        raise Unprocessable(CSV_UNPARSABLE) from None
    return table, features


def resolve_columns(names: list[str], spec: UploadSpec) -> list[str]:
    """Check the file's columns against the spec and answer the feature columns."""
    if len(names) > MAX_COLUMNS:
        raise Unprocessable(f"The file has {len(names)} columns; at most {MAX_COLUMNS} are allowed.")
    # Checked first, as the messages below name columns: names are stored and shown as the
    # dataset's schema (the values are training data and are not inspected).
    for position, name in enumerate(names, start=1):
        if find_identifier(name):
            raise Unprocessable(f"The name of column {position} looks like an e-mail address or phone number; rename it.")
    named = [spec.subject_column, spec.label_column, *(spec.feature_columns or [])]
    if any(find_identifier(name) for name in named):
        raise Unprocessable("A column named in the form looks like an e-mail address or phone number.")
    if len(set(names)) != len(names):
        raise Unprocessable("The file's column names are not unique.")
    present = set(names)
    for role, column in (("subject_column", spec.subject_column), ("label_column", spec.label_column)):
        if column not in present:
            raise Unprocessable(f"The {role} '{column}' is not a column of the file.")
    if spec.subject_column == spec.label_column:
        raise Unprocessable("subject_column and label_column must be different columns.")
    identifier_columns = set(spec.identifier_columns.values())
    metadata = set(spec.metadata_columns)
    if spec.feature_columns is None:
        # Identifier and metadata columns are never features, not even by default.
        features = [n for n in names if n not in (spec.subject_column, spec.label_column)
                    and n not in identifier_columns and n not in metadata]
    else:
        features = list(spec.feature_columns)
        missing = [c for c in features if c not in present]
        if missing:
            raise Unprocessable(f"Feature columns not in the file: {', '.join(missing[:10])}.")
        if len(set(features)) != len(features):
            raise Unprocessable("feature_columns names a column more than once.")
        clash = {spec.subject_column, spec.label_column} & set(features)
        if clash:
            raise Unprocessable("feature_columns may not include the subject or label column.")
    if not features:
        raise Unprocessable("The file has no feature columns besides the subject and label columns.")
    taken = [spec.subject_column, spec.label_column, *features]
    check_identifier_columns(names, spec.identifier_columns, spec.subject_kind, taken)
    check_metadata_columns(names, spec.metadata_columns, [*taken, *identifier_columns])
    reserved = [c for c in features if c in RESERVED_COLUMNS]
    if reserved:
        raise Unprocessable(
            f"Feature columns may not be named {', '.join(RESERVED_COLUMNS)}: rename {', '.join(reserved)}."
        )
    return features


def check_identifier_columns(
    names: list[str], identifier_columns: dict[str, str], subject_kind: str, taken: list[str],
) -> None:
    """The identifier columns exist, are distinct, and are none of the upload's other columns."""
    columns = list(identifier_columns.values())
    if subject_kind in identifier_columns:
        raise Unprocessable(f"identifier_columns may not repeat the subject kind '{subject_kind}'.")
    if len(set(columns)) != len(columns):
        raise Unprocessable("identifier_columns names a column more than once.")
    for column in columns:
        if column not in names:
            raise Unprocessable(f"The identifier column '{column}' is not a column of the file.")
        if column in taken:
            raise Unprocessable(f"The identifier column '{column}' is also the subject, label, text or a feature column.")


def check_metadata_columns(names: list[str], metadata: list[str], taken: list[str]) -> None:
    """The metadata columns exist, are distinct, and are none of the upload's other columns."""
    if len(set(metadata)) != len(metadata):
        raise Unprocessable("metadata_columns names a column more than once.")
    for column in metadata:
        if column not in names:
            raise Unprocessable(f"The metadata column '{column}' is not a column of the file.")
        if column in taken:
            raise Unprocessable(f"The metadata column '{column}' is also the subject, label, a feature or an identifier column.")
        if column in RESERVED_COLUMNS:
            raise Unprocessable(f"Metadata columns may not be named {', '.join(RESERVED_COLUMNS)}.")


def _check_values(table: pa.Table, spec: UploadSpec, features: list[str]) -> None:
    if table.num_rows == 0:
        raise Unprocessable("The file has no rows.")
    for column in (spec.subject_column, spec.label_column, *features):
        if table.column(column).null_count:
            raise Unprocessable(f"Column '{column}' has empty (null) values.")
    subject_type = plain_type(table.column(spec.subject_column).type)
    if not (is_text(subject_type) or pa.types.is_integer(subject_type)):
        raise Unprocessable(f"The subject column '{spec.subject_column}' must hold text or integers.")
    label_type = plain_type(table.column(spec.label_column).type)
    if not (pa.types.is_integer(label_type) or pa.types.is_boolean(label_type) or is_text(label_type)):
        raise Unprocessable(f"The label column '{spec.label_column}' must hold integers or text class names.")
    for column in features:
        values = table.column(column)
        kind = values.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise Unprocessable(f"Feature column '{column}' is not numeric (int, float or bool); found {kind}.")
        if pa.types.is_floating(kind) and not pc.all(pc.is_finite(values)).as_py():
            raise Unprocessable(f"Feature column '{column}' has NaN or infinite values.")
        check_float32_range(values, column)


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def plain_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def decoded(values: pa.ChunkedArray) -> pa.Array:
    """One contiguous array, with dictionary encoding (pandas categoricals) undone."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array
