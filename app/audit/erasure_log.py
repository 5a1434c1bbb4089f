"""The erasure log outside the database (docs/operations.md, "Backup and restore").

A database restored from a backup has forgotten every erasure that completed after the backup:
the people come back. So each completed erasure request also leaves a signed entry here, in
`erasure_log_dir`, which a restore does not roll back: the request, its client, when it
completed, and its pseudonymised subject keys (the keys the tombstones hold; never a raw
identifier). `obliviate restore-check` compares a restored database with these entries and
re-applies what the database lost.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import fsspec.core
from cryptography.exceptions import InvalidSignature
from sqlalchemy.orm import Session

from app import signing
from app.audit.chain import canonical_json, format_time
from app.config import get_settings
from app.db import on_commit

log = logging.getLogger("obliviate.audit")

FORMAT = 1


class EntryError(ValueError):
    """An entry that is not a readable, signed erasure-log entry of this service."""


@dataclass(frozen=True)
class ErasureEntry:
    request_id: uuid.UUID
    client: str
    jurisdiction: str
    completed_at: datetime
    outcome: str | None
    subjects: tuple[tuple[str, str], ...]  # (identifier kind, subject key)

    def body(self) -> dict:
        return {
            "format": FORMAT, "request_id": str(self.request_id), "client": self.client,
            "jurisdiction": self.jurisdiction, "completed_at": format_time(self.completed_at), "outcome": self.outcome,
            "subjects": [{"kind": kind, "subject_key": key} for kind, key in self.subjects],
        }


def folder() -> tuple[fsspec.AbstractFileSystem, str]:
    settings = get_settings()
    url = settings.erasure_log_dir or f"{settings.artifacts_url.rstrip('/')}/erasure-log"
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/") or "/"


def record_after_commit(session: Session, entry: ErasureEntry) -> None:
    """Write `entry` once the transaction that completed its request commits: an erasure that
    rolled back must not be re-applied after a restore."""
    on_commit(session, lambda: write(entry))


def write(entry: ErasureEntry) -> None:
    body = entry.body()
    key = signing.private_key()
    document = {
        **body,
        "signature": {
            "key_id": signing.key_id(signing.public_key_b64(key.public_key())),
            "value": base64.b64encode(key.sign(canonical_json(body))).decode(),
        },
    }
    try:
        fs, root = folder()
        fs.makedirs(root, exist_ok=True)
        staged = f"{root}/.{entry.request_id}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(staged, canonical_json(document))
        fs.mv(staged, f"{root}/{entry.request_id}.json")
    except OSError:
        # The erasure itself stands; only a later restore could not re-apply it.
        log.error("could not write the erasure-log entry of request %s", entry.request_id, exc_info=True)


def parse(raw: bytes) -> ErasureEntry:
    """The entry in `raw`, its signature checked against this service's signing keys."""
    try:
        document = json.loads(raw)
        signature = document.pop("signature")
        if document.get("format") != FORMAT:
            raise EntryError(f"unknown format {document.get('format')!r}")
        entry = ErasureEntry(
            request_id=uuid.UUID(document["request_id"]), client=str(document["client"]),
            jurisdiction=str(document["jurisdiction"]), completed_at=datetime.fromisoformat(document["completed_at"]), outcome=document["outcome"],
            subjects=tuple((str(s["kind"]), str(s["subject_key"])) for s in document["subjects"]),
        )
        if entry.body() != document:
            raise EntryError("the entry holds fields outside its signed body")
        public = signing.private_key_of(str(signature["key_id"])).public_key()
        public.verify(base64.b64decode(signature["value"]), canonical_json(document))
    except EntryError:
        raise
    except InvalidSignature:
        raise EntryError("the signature does not verify") from None
    except RuntimeError as exc:  # a key id this service does not hold
        raise EntryError(str(exc)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EntryError(f"not an erasure-log entry ({type(exc).__name__})") from None
    return entry


def read_all() -> tuple[list[ErasureEntry], list[tuple[str, str]]]:
    """Every entry, oldest completion first, and (file name, problem) for each unusable file."""
    fs, root = folder()
    entries, problems = [], []
    try:
        paths = sorted(p for p in fs.ls(root, detail=False) if str(p).endswith(".json"))
    except FileNotFoundError:
        return [], []
    for path in paths:
        name = str(path).rsplit("/", 1)[-1]
        try:
            entries.append(parse(fs.cat_file(path)))
        except EntryError as exc:
            problems.append((name, str(exc)))
        except OSError as exc:
            problems.append((name, f"unreadable ({type(exc).__name__})"))
    entries.sort(key=lambda e: (e.completed_at, str(e.request_id)))
    return entries, problems
