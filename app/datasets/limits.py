"""How large an upload may become in memory, decided before it is read.

A file's size says little about its rows: Parquet stores a column of 20 million equal values in
a few hundred bytes, and ingesting those rows took 4 GB. So the row count (Parquet's footer, or a
streaming count over a CSV file that converts one column) and an estimate of the memory that
ingesting those rows needs are checked first, and a file over either limit is refused with 413
before it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.config import get_settings
from app.errors import PayloadTooLarge, Unprocessable

# Bytes of memory per row that ingesting costs besides the columns themselves: the row's
# pseudonym index, record id, filter masks, the lineage index (Python integers grouped by
# subject) and, for a file of distinct subjects, a pseudonym per row. Measured peak: 380 bytes
# per row with one subject, 900 with a subject per row (1M rows, 4 features).
ROW_BYTES = 900
# Per feature value: the decoded value, its float32 copy and the filtered copy.
FEATURE_VALUE_BYTES = 16
# Arrow stores each text value with a 4-byte offset.
TEXT_OFFSET_BYTES = 4
FLOAT32_MAX = 3.4028234663852886e38
_FIXED_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


@dataclass(frozen=True)
class UploadLimits:
    max_rows: int
    max_memory_bytes: int

    @classmethod
    def from_settings(cls) -> "UploadLimits":
        settings = get_settings()
        return cls(settings.max_dataset_rows, settings.max_upload_memory_bytes)

    def check_rows(self, rows: int, *, at_least: bool = False) -> None:
        if rows > self.max_rows:
            counted = f"more than {self.max_rows}" if at_least else str(rows)
            raise PayloadTooLarge(
                f"The file has {counted} rows; at most {self.max_rows} are accepted (OBLIVIATE_MAX_DATASET_ROWS)."
            )

    def check_memory(self, rows: int, features: int, column_bytes: int) -> None:
        needed = rows * (ROW_BYTES + FEATURE_VALUE_BYTES * features) + column_bytes
        if needed > self.max_memory_bytes:
            raise PayloadTooLarge(
                f"Ingesting this file would need about {needed // 2**20} MiB of memory; the budget per upload "
                f"is {self.max_memory_bytes // 2**20} MiB (OBLIVIATE_MAX_UPLOAD_MEMORY_BYTES). Split it into "
                "smaller uploads or ask the operator to raise the budget."
            )


def open_parquet(path) -> tuple[pq.ParquetFile, list[str]]:
    """An uploaded Parquet file and its column names, or 422 when it only starts like one."""
    try:
        parquet = pq.ParquetFile(path)
        return parquet, list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError):
        raise Unprocessable("The file starts like Parquet but is not a valid Parquet file.") from None


def check_parquet_footer(metadata: pq.FileMetaData, columns: list[str], features: int, limits: UploadLimits) -> None:
    """Refuse from the footer alone: its row count, and the decoded size of the columns read."""
    rows = metadata.num_rows
    limits.check_rows(rows)
    wanted = set(columns)
    column_bytes = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.path_in_schema in wanted:
                column_bytes += _decoded_bytes(chunk, row_group.num_rows)
    limits.check_memory(rows, features, column_bytes)


# Rows decoded at a time by `read_parquet_bounded`.
PARQUET_BATCH_ROWS = 1024


def read_parquet_bounded(parquet: pq.ParquetFile, columns: list[str], features: int, limits: UploadLimits) -> pa.Table:
    """The columns, decoded a batch of rows at a time with the running decoded size checked
    against the budget after each batch: the footer gives no length for values without
    statistics, and a value repeated through dictionary pages decodes to far more than the
    file (the first review's Parquet bomb). An upload over the budget stops at the batch that
    crosses it."""
    rows = parquet.metadata.num_rows
    batches, decoded = [], 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns, use_threads=False):
        decoded += sum(_dense_bytes(column) for column in batch.columns)
        limits.check_memory(rows, features, decoded)
        batches.append(batch)
    if not batches:
        return parquet.schema_arrow.empty_table().select(columns)
    return pa.Table.from_batches(batches)


def _dense_bytes(array: pa.Array) -> int:
    """Bytes of the array once dictionary encoding is undone, as the upload's later steps do."""
    if not pa.types.is_dictionary(array.type):
        return array.nbytes
    if pa.types.is_string(array.type.value_type) or pa.types.is_binary(array.type.value_type):
        lengths = pc.binary_length(array.dictionary).take(array.indices)
        return int(pc.sum(lengths).as_py() or 0) + TEXT_OFFSET_BYTES * len(array)
    return array.indices.nbytes + len(array) * max(1, array.dictionary.nbytes // max(1, len(array.dictionary)))


def _decoded_bytes(chunk, rows: int) -> int:
    """A lower bound of a column chunk's size once decoded: dictionary and run-length encodings
    make the stored size far smaller than the values."""
    width = _FIXED_WIDTH.get(chunk.physical_type)
    if width is not None:
        return max(rows * width, chunk.total_uncompressed_size)
    longest = 0
    statistics = chunk.statistics
    if statistics is not None and statistics.has_min_max:
        longest = max(_length(statistics.min), _length(statistics.max))
    return max(rows * (TEXT_OFFSET_BYTES + longest), chunk.total_uncompressed_size)


def _length(value) -> int:
    return len(value.encode() if isinstance(value, str) else value) if isinstance(value, str | bytes) else 8


def check_csv_rows(path, subject_column: str, features: int, limits: UploadLimits) -> None:
    """Count a CSV file's rows by streaming it, converting only the subject column, a block at a
    time; stop at the first block past the row limit."""
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=1 << 20),
        convert_options=pacsv.ConvertOptions(
            column_types={subject_column: pa.string()}, include_columns=[subject_column],
        ),
    )
    rows = text_bytes = 0
    try:
        for batch in reader:
            rows += batch.num_rows
            text_bytes += batch.nbytes
            limits.check_rows(rows, at_least=True)
    finally:
        reader.close()
    limits.check_memory(rows, features, text_bytes)


def check_float32_range(values: pa.ChunkedArray, column: str) -> None:
    """Features are stored as float32: a value beyond its range would become infinity."""
    if pa.types.is_floating(values.type) and values.type.bit_width > 32 and len(values):
        largest = pc.max(pc.abs(values)).as_py()
        if largest is not None and largest > FLOAT32_MAX:
            raise Unprocessable(
                f"Feature column '{column}' has values beyond the float32 range (±3.4e38), "
                "which is how features are stored."
            )
