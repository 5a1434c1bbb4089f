"""A file of record ids for a remediation request (docs/remediation.md, "A file of record ids"):
one decimal id per line, or CSV with a `record_id` column. Read line by line from the spooled
upload, each line bounded, so a hostile file costs at most its (limited) size on disk and one
int64 per id in memory. Problems name line numbers and counts, never the file's contents.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from app.errors import PayloadTooLarge, Unprocessable

INT64_MAX = 2**63 - 1
# Longest line read; a CSV row with other columns beside record_id fits easily.
MAX_LINE = 64 * 1024
_DIGITS = re.compile(r"[0-9]+")
BOM = "\ufeff"
# The leading bytes looked at for NUL bytes (a binary file) before any line is read.
SNIFF = 8192
TEXT_HINT = "send text: one record id per line, or CSV with a record_id column"


@dataclass(frozen=True)
class IdFile:
    """The ids in the order of the file, each with its line number (1-based)."""

    ids: np.ndarray
    lines: np.ndarray
    sha256: str
    size: int
    format: str  # "lines" | "csv"

    def summary(self) -> dict[str, object]:
        """What the request, its audit trail and its idempotency record keep of the file."""
        return {"sha256": self.sha256, "bytes": self.size, "ids": int(len(self.ids)), "format": self.format}


def read(stream: BinaryIO, *, max_bytes: int, max_ids: int) -> IdFile:
    """Parse and check the file: 413 above `max_bytes`; 422 when it is empty, binary, not UTF-8,
    of neither format, holds something other than an id where an id belongs, holds more than
    `max_ids` ids, or repeats an id."""
    size = stream.seek(0, io.SEEK_END)
    if size > max_bytes:
        raise PayloadTooLarge(f"The record ids file has {size} bytes; at most {max_bytes} "
                              "(OBLIVIATE_MAX_RECORD_IDS_BYTES).")
    stream.seek(0)
    if b"\x00" in stream.read(SNIFF):
        raise Unprocessable(f"The record ids file is binary (it holds NUL bytes); {TEXT_HINT}.")
    stream.seek(0)
    digest = hashlib.sha256()
    lines = _lines(stream, digest)
    ids, numbers = array("q"), array("q")
    first = next(((n, text) for n, text in lines if text.strip()), None)
    if first is None:
        raise Unprocessable("The record ids file holds no record ids.")
    number, text = first
    if _DIGITS.fullmatch(text.strip()):
        fmt = "lines"
        _add(ids, numbers, text.strip(), number, max_ids)
        for number, text in lines:
            if text.strip():
                _add(ids, numbers, text.strip(), number, max_ids)
    else:
        fmt = "csv"
        _read_csv(number, text, lines, ids, numbers, max_ids)
    for _ in lines:  # the digest covers the whole file
        pass
    if not ids:
        raise Unprocessable("The record ids file holds no record ids.")
    found = np.frombuffer(ids, dtype=np.int64)
    at = np.frombuffer(numbers, dtype=np.int64)
    _no_repeats(found, at)
    return IdFile(found, at, digest.hexdigest(), size, fmt)


def _lines(stream: BinaryIO, digest: Any) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line, each checked: bounded, no NUL, UTF-8."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        digest.update(raw)
        if len(raw) > MAX_LINE:
            raise Unprocessable(f"Line {number} of the record ids file is longer than {MAX_LINE} bytes.",
                                line=number)
        if b"\x00" in raw:
            raise Unprocessable(f"The record ids file is binary (a NUL byte on line {number}); {TEXT_HINT}.",
                                line=number)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Unprocessable(f"Line {number} of the record ids file is not UTF-8 text; {TEXT_HINT}.",
                                line=number) from None
        if number == 1 and text.startswith(BOM):
            text = text[len(BOM):]
        yield number, text.rstrip("\r\n")


def _add(ids: array, numbers: array, value: str, number: int, max_ids: int) -> None:
    if not _DIGITS.fullmatch(value):
        raise Unprocessable(f"Line {number} of the record ids file is not a record id (a decimal integer).",
                            line=number)
    significant = value.lstrip("0") or "0"
    if len(significant) > 19 or int(significant) > INT64_MAX:
        raise Unprocessable(f"Line {number}: a record id is at most 2^63 - 1.", line=number)
    if len(ids) >= max_ids:
        raise Unprocessable(f"The record ids file holds more than {max_ids} record ids (OBLIVIATE_MAX_RECORD_IDS).",
                            limit=max_ids)
    ids.append(int(significant))
    numbers.append(number)


def _read_csv(header_line: int, header_text: str, lines: Iterator[tuple[int, str]], ids: array, numbers: array,
              max_ids: int) -> None:
    """CSV: the first non-blank line is the header, which names `record_id` once."""
    try:
        header = [name.strip() for name in next(csv.reader([header_text]))]
    except csv.Error:
        header = []
    if header.count("record_id") != 1:
        raise Unprocessable(
            f"Line {header_line} of the record ids file is neither a record id nor a CSV header with one "
            f"record_id column; {TEXT_HINT}.", line=header_line)
    column = header.index("record_id")
    current = header_line

    def texts() -> Iterator[str]:
        nonlocal current
        for number, text in lines:
            current = number
            yield text

    reader = csv.reader(texts(), strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            raise Unprocessable(f"Line {current} of the record ids file is not valid CSV.", line=current) from None
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise Unprocessable(f"Line {current} of the record ids file has {len(row)} fields; its header has "
                                f"{len(header)}.", line=current)
        _add(ids, numbers, row[column].strip(), current, max_ids)


def _no_repeats(ids: np.ndarray, lines: np.ndarray) -> None:
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    repeated = ordered[1:] == ordered[:-1]
    if repeated.any():
        later = lines[order[1:]][repeated]
        earlier = lines[order[:-1]][repeated]
        first = int(np.argmin(later))
        count = int(repeated.sum())
        raise Unprocessable(
            f"Line {int(later[first])} of the record ids file repeats the record id of line {int(earlier[first])} "
            f"({count} repeated {'id' if count == 1 else 'ids'} in all); each id must appear once.",
            line=int(later[first]), repeated=count)
