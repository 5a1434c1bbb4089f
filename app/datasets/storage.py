"""Storing dataset versions: the artifact, the version row and its lineage index rows.

Shared by uploads (service.py) and erasures (erasure.py). Everything here only flushes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.artifacts.store import ArtifactStore
from app.config import get_settings
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords, Tombstone
from app.db import utcnow

# Rows per INSERT batch, and keys per IN (...) list: well under SQLite's 32,766 parameters.
INSERT_CHUNK = 5_000
IN_CHUNK = 1_000
# Below this many tombstones a client's whole set is read at once instead of probed per key.
TOMBSTONES_READ_ALL = 100_000


def work_dir() -> Path:
    path = get_settings().data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def stored_artifact(session: Session, store: ArtifactStore, path: Path, sha: str) -> Iterator[str]:
    """Put a file in the store for the rows about to reference it. The hash is held first, so no
    pending deletion of the same content can remove the bytes before this transaction ends. If
    the rows fail, bytes that were new are scheduled for deletion once the transaction has rolled
    back: content addressing shares them, so another writer may have started to use them."""
    artifact_service.hold(session, [sha])
    existed = store.exists(sha)
    store.put_file(path, sha=sha)
    try:
        yield sha
    except BaseException:
        if not existed:
            # Only dataset versions are asked here (this layer knows no model versions); the
            # sweeper asks every table again before it deletes the bytes.
            artifact_service.discard_after_rollback(session, [sha], live_references)
        raise


def live_references(session: Session, shas: Sequence[str]) -> set[str]:
    """Which of these hashes a dataset version of any client, not destroyed, is stored as."""
    wanted = sorted(set(shas))
    found: set[str] = set()
    for start in range(0, len(wanted), IN_CHUNK):
        found.update(session.scalars(select(DatasetVersion.sha256).where(
            DatasetVersion.sha256.in_(wanted[start:start + IN_CHUNK]), DatasetVersion.destroyed_at.is_(None))))
    return found


def add_version(
    session: Session, dataset: Dataset, sha: str, rows: int, subjects: int, origin: dict[str, Any],
    parent: DatasetVersion | None, *, make_current: bool = True,
) -> DatasetVersion:
    """The dataset's next version number; call with the dataset row locked."""
    artifact_service.adopt(session, [sha])
    latest = session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id))
    version = DatasetVersion(
        id=uuid.uuid4(), dataset_id=dataset.id, version=(latest or 0) + 1, sha256=sha, rows=rows,
        subjects=subjects, parent_version_id=parent.id if parent is not None else None,
        origin=origin, created_at=utcnow(),
    )
    session.add(version)
    if make_current:
        dataset.current_version = version.version
    session.flush()
    return version


def insert_subject_records(session: Session, version_id: uuid.UUID, groups: Iterable[tuple[str, list[int]]]) -> None:
    batch: list[dict[str, Any]] = []
    for key, record_ids in groups:
        batch.append({"dataset_version_id": version_id, "subject_key": key, "record_ids": record_ids})
        if len(batch) >= INSERT_CHUNK:
            session.execute(SubjectRecords.__table__.insert(), batch)
            batch = []
    if batch:
        session.execute(SubjectRecords.__table__.insert(), batch)


def tombstoned_keys(session: Session, client: str, keys: Sequence[str]) -> set[str]:
    """Which of `keys` this client has erased (their rows must never be stored again)."""
    count = session.scalar(select(func.count()).select_from(Tombstone).where(Tombstone.client == client)) or 0
    if count == 0 or not keys:
        return set()
    if count <= TOMBSTONES_READ_ALL:
        return set(session.scalars(select(Tombstone.subject_key).where(Tombstone.client == client))) & set(keys)
    found: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        chunk = list(keys[start:start + IN_CHUNK])
        found.update(session.scalars(
            select(Tombstone.subject_key).where(Tombstone.client == client, Tombstone.subject_key.in_(chunk))
        ))
    return found


def add_tombstones(session: Session, client: str, subject_keys: Iterable[str], request_id: uuid.UUID) -> int:
    """Record erased subjects so later uploads drop their rows; answers how many were new."""
    keys = sorted(set(subject_keys))
    new = [k for k in keys if k not in tombstoned_keys(session, client, keys)]
    if new:
        now = utcnow()
        session.execute(insert(Tombstone), [
            {"client": client, "subject_key": k, "request_id": request_id, "created_at": now} for k in new
        ])
        session.flush()
    return len(new)
