"""`obliviate requests import`: bulk intake from JSON Lines or CSV.

Every record must carry an external_id. That is what makes an import resumable: requests
already stored for (client, external_id) are reported as existing, so a run that was cut off is
simply run again. Batches commit one by one, so an interruption loses at most one batch.

Records hold raw identifiers. Nothing here prints a record, a value or a parser message that
quotes one: invalid records are reported by line number, field name and a value-free reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.cli.common import EXIT_USAGE, err_console, fail
from app.db import session_scope
from app.errors import sanitised_validation_errors
from app.keys.service import Principal
from app.requests import service
from app.requests.schemas import ErasureRequestCreate

CSV_FIELDS = ("jurisdiction", "source", "external_id", "identity_verified", "reason", "callback_url")
IDENTIFIER_PREFIX = "identifier."
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f", ""}


class ImportFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


@dataclass(frozen=True)
class ImportPrincipal(Principal):
    """The importing operator, recorded as such in every request's first audit event."""

    @property
    def actor(self) -> str:
        return "cli:import"


@dataclass
class ImportResult:
    created: int = 0
    existing: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    # Lines whose external_id is already used by a request for a different subject.
    conflicts: list[int] = field(default_factory=list)


class RecordError(ValueError):
    """A value-free reason why one record cannot be imported."""


def detect_format(path: Path, given: ImportFormat | None) -> ImportFormat:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return ImportFormat.jsonl
    if suffix == ".csv":
        return ImportFormat.csv
    raise fail(f"cannot tell the format of {path.name} from its extension; pass --format jsonl or --format csv.", EXIT_USAGE)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError:
                yield number, RecordError("not UTF-8 text")
                continue
            except json.JSONDecodeError as exc:
                # exc.msg is the parser's reason alone; str(exc) would be fine too, but the
                # document itself must never be shown.
                yield number, RecordError(f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield number, RecordError("expected a JSON object")
                continue
            yield number, record


def _csv_header(reader: csv.DictReader) -> list[str]:
    header = [name.strip() for name in (reader.fieldnames or [])]
    unknown = [position for position, name in enumerate(header, start=1)
               if name not in CSV_FIELDS and not name.startswith(IDENTIFIER_PREFIX)]
    if unknown:
        # By position only: in a file without a header row, the "names" are the first record.
        positions = ", ".join(str(position) for position in unknown[:10])
        raise fail(
            f"the CSV header has {len(unknown)} unknown column(s) (column {positions}; names not shown, in case the "
            f"file has no header row); expected {', '.join(CSV_FIELDS)} and identifier.<kind> columns.", EXIT_USAGE
        )
    if not any(name.startswith(IDENTIFIER_PREFIX) for name in header):
        raise fail("the CSV file has no identifier.<kind> column (e.g. identifier.email).", EXIT_USAGE)
    return header


def _csv_record(row: dict[str | None, Any]) -> dict[str, Any]:
    if None in row:
        raise RecordError("more values than there are columns")
    record: dict[str, Any] = {}
    identifiers: dict[str, str] = {}
    for column, value in row.items():
        value = (value or "").strip()
        if column.startswith(IDENTIFIER_PREFIX):
            if value:
                identifiers[column[len(IDENTIFIER_PREFIX):]] = value
        elif column == "identity_verified":
            if value.lower() not in TRUE_WORDS | FALSE_WORDS:
                raise RecordError("identity_verified: expected true or false")
            record[column] = value.lower() in TRUE_WORDS
        elif value:
            record[column] = value
    record["subject"] = {"identifiers": identifiers}
    return record


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = _csv_header(reader)
        line_end = reader.line_num
        for row in reader:
            # A quoted field may span lines; report the line the record starts on.
            number, line_end = line_end + 1, reader.line_num
            try:
                yield number, _csv_record(row)
            except RecordError as exc:
                yield number, exc


def _records(path: Path, file_format: ImportFormat):
    try:
        yield from (_jsonl_records(path) if file_format is ImportFormat.jsonl else _csv_records(path))
    except UnicodeDecodeError:
        raise fail(f"{path.name} is not UTF-8 text.", EXIT_USAGE) from None
    except csv.Error as exc:
        raise fail(f"{path.name} is not valid CSV ({exc}).", EXIT_USAGE) from None


def _count(path: Path, file_format: ImportFormat) -> int:
    return sum(1 for _ in _records(path, file_format))


def _validate(record: dict[str, Any]) -> ErasureRequestCreate:
    try:
        payload = ErasureRequestCreate.model_validate(record)
    except ValidationError as exc:
        # Only location and message: pydantic's "input" would carry the raw identifier.
        # and a location names schema fields only (an unknown field's name could be one too).
        reasons = [
            f"{'.'.join(str(part) for part in error['loc']) or 'record'}: {error['msg']}"
            for error in sanitised_validation_errors(exc.errors(include_input=False, include_url=False, include_context=False))
        ]
        raise RecordError("; ".join(reasons[:5])) from None
    if payload.external_id is None:
        raise RecordError("external_id: required for import (it lets a re-run skip what is already stored)")
    return payload


def run_import(path: Path, file_format: ImportFormat | None, client: str, batch_size: int) -> ImportResult:
    file_format = detect_format(path, file_format)
    total = _count(path, file_format)
    principal = ImportPrincipal(key_id="cli", client=client, name="cli:import", scopes=frozenset({"requests:write"}))
    result = ImportResult()
    progress = Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
    )
    batch: list[tuple[int, ErasureRequestCreate]] = []

    def commit_batch() -> None:
        with session_scope() as session:
            for number, payload in batch:
                try:
                    _request, created = service.create(session, principal, payload)
                except service.ExternalIdTaken:
                    # Nothing was written for it, so the batch's transaction goes on.
                    result.conflicts.append(number)
                    continue
                if created:
                    result.created += 1
                else:
                    result.existing += 1
        progress.advance(task, len(batch))
        batch.clear()

    with progress:
        task = progress.add_task("import", total=total)
        try:
            for number, record in _records(path, file_format):
                try:
                    if isinstance(record, RecordError):
                        raise record
                    batch.append((number, _validate(record)))
                except RecordError as exc:
                    result.invalid.append((number, str(exc)))
                    progress.advance(task)
                    continue
                if len(batch) >= batch_size:
                    commit_batch()
            if batch:
                commit_batch()
        except KeyboardInterrupt:
            progress.stop()
            raise fail(
                f"interrupted after {result.created} created and {result.existing} existing; the batch in "
                "progress was rolled back. Run the same command again to import the rest.", 130,
            ) from None
    return result
