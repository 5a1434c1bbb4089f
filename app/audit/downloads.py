"""Copies that left the service: every download of weights, references or a dataset is an audit
event in a chain per model or dataset (`downloads:<kind>:<id>`), naming who downloaded which
version with which hash. An erasure cannot reach such a copy; a certificate states them as
copies downloaded before the erasure, outside the service's reach, from `copies`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.principal import Principal

EVENT = "artifact.downloaded"
KINDS = frozenset({"model", "dataset"})


def stream(kind: str, owner_id: uuid.UUID) -> str:
    return f"downloads:{kind}:{owner_id}"


@dataclass(frozen=True)
class DownloadedCopy:
    kind: str  # "model" or "dataset"
    owner_id: uuid.UUID  # the model's or the dataset's id
    version: int
    artifact: str  # "weights", "reference" or "data"
    sha256: str
    key_id: str  # the API key that downloaded it
    client: str  # the key's client
    at: datetime


def record(session: Session, principal: Principal, kind: str, owner_id: uuid.UUID, version: int,
           artifact: str, sha256: str) -> None:
    """Audit one download in the caller's transaction: the bytes leave only if it commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    audit_service.append(session, stream(kind, owner_id), EVENT, principal.actor, {
        "kind": kind, "id": str(owner_id), "version": version, "artifact": artifact, "sha256": sha256,
        "key_id": principal.key_id, "client": principal.client,
    })


def copies(session: Session, *, model_versions: Iterable[tuple[uuid.UUID, int]] = (),
           dataset_versions: Iterable[tuple[uuid.UUID, int]] = (), before: datetime | None = None) -> list[DownloadedCopy]:
    """Every download of these (model id, version) and (dataset id, version), oldest first; with
    `before`, only those made before it (an erasure's completion)."""
    wanted = {("model", owner, version) for owner, version in model_versions}
    wanted |= {("dataset", owner, version) for owner, version in dataset_versions}
    if not wanted:
        return []
    streams = sorted({stream(kind, owner) for kind, owner, _version in wanted})
    query = select(AuditEvent).where(AuditEvent.stream.in_(streams), AuditEvent.type == EVENT)
    if before is not None:
        query = query.where(AuditEvent.at < before)
    found = []
    for event in session.scalars(query.order_by(AuditEvent.at, AuditEvent.id)):
        data = event.data
        owner = uuid.UUID(data["id"])
        if (data["kind"], owner, data["version"]) in wanted:
            found.append(DownloadedCopy(data["kind"], owner, data["version"], data["artifact"], data["sha256"],
                                        data["key_id"], data["client"], event.at))
    return found
