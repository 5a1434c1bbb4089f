"""Removing subjects from a dataset version, and destroying files that still hold them.

Called by the unlearning worker inside its own unit of work; these functions only flush.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from app.artifacts.store import ArtifactStore, get_store
from app.datasets import ingest
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.datasets.storage import IN_CHUNK, add_version, insert_subject_records, stored_artifact, work_dir
from app.db import utcnow


class LineageMismatch(RuntimeError):
    """The lineage index and the stored file disagree about a subject's rows: erasing from
    either alone could leave the person behind, so the job must stop."""


@dataclass(frozen=True)
class ErasureOutcome:
    version: DatasetVersion  # the version without the subjects (the given one if none were in it)
    parent: DatasetVersion
    created: bool  # False for a re-run of the same job, or when no subject had rows here
    rows_removed: int
    subjects_removed: int

    @property
    def sha256_before(self) -> str:
        return self.parent.sha256

    @property
    def sha256_after(self) -> str:
        return self.version.sha256


def erase_subjects(
    session: Session, dataset_version: DatasetVersion, subject_keys: Iterable[str], job_id: uuid.UUID | str,
    *, store: ArtifactStore | None = None,
) -> ErasureOutcome:
    """A new version of the dataset without the subjects' rows; every other record keeps its
    record_id, so manifests of other shards and slices stay valid.

    Deterministic (same file, same keys: same bytes and sha256) and safe to re-run: a second call
    for the same job and version answers the version the first call made. The new version
    becomes the dataset's current one when `dataset_version` was current."""
    store = store or get_store()
    keys = sorted(set(subject_keys))
    parent = dataset_version
    job = str(job_id)
    # Locked first: a concurrent erasure or upload of this dataset waits here, and the look-up
    # below then sees the version an earlier attempt of this job committed.
    dataset = session.scalar(select(Dataset).where(Dataset.id == parent.dataset_id).with_for_update())
    for child in session.scalars(select(DatasetVersion).where(DatasetVersion.parent_version_id == parent.id)):
        if child.origin.get("kind") == "erasure" and child.origin.get("job_id") == job:
            return ErasureOutcome(child, parent, False, child.origin["rows_removed"], child.origin["subjects_removed"])
    indexed = _indexed_rows(session, parent.id, keys)
    if not indexed:
        return ErasureOutcome(parent, parent, False, 0, 0)
    table = ingest.read_version_table(store, parent.sha256)
    erased = pc.is_in(table.column("subject_key"), value_set=pa.array(keys, pa.string()))
    rows_removed = int(pc.sum(erased).as_py() or 0)
    if rows_removed != sum(indexed.values()):
        raise LineageMismatch(
            f"dataset version {parent.id}: the lineage index lists {sum(indexed.values())} rows of these "
            f"subjects, the file has {rows_removed}"
        )
    remaining = table.filter(pc.invert(erased))
    out_path = work_dir() / f"erasure-{uuid.uuid4().hex}.parquet"
    try:
        sha = ingest.write_version_file(remaining, out_path)
        origin = {
            "kind": "erasure", "job_id": job, "rows_removed": rows_removed, "subjects_removed": len(indexed),
            "parent_sha256": parent.sha256,
        }
        with stored_artifact(session, store, out_path, sha):
            version = add_version(
                session, dataset, sha, remaining.num_rows, parent.subjects - len(indexed), origin, parent,
                make_current=dataset.current_version == parent.version,
            )
            _copy_subject_records(session, parent.id, version.id, sorted(indexed))
            session.flush()
    finally:
        out_path.unlink(missing_ok=True)
    return ErasureOutcome(version, parent, True, rows_removed, len(indexed))


def erase_records(
    session: Session, dataset_version: DatasetVersion, record_ids: Iterable[int], job_id: uuid.UUID | str,
    *, store: ArtifactStore | None = None,
) -> ErasureOutcome:
    """A new version of the dataset without these records (a remediated slice,
    docs/remediation.md); every other record keeps its record_id, and the lineage index of the
    new version lists the subjects' remaining records. Deterministic and safe to re-run, as
    `erase_subjects`; `subjects_removed` counts the subjects left with no record at all."""
    store = store or get_store()
    parent = dataset_version
    job = str(job_id)
    dataset = session.scalar(select(Dataset).where(Dataset.id == parent.dataset_id).with_for_update())
    for child in session.scalars(select(DatasetVersion).where(DatasetVersion.parent_version_id == parent.id)):
        if child.origin.get("kind") == "remediation" and child.origin.get("job_id") == job:
            return ErasureOutcome(child, parent, False, child.origin["rows_removed"], child.origin["subjects_removed"])
    table = ingest.read_version_table(store, parent.sha256)
    removed = pc.is_in(table.column("record_id"), value_set=pa.array(sorted(set(record_ids)), pa.int64()))
    rows_removed = int(pc.sum(removed).as_py() or 0)
    if rows_removed == 0:
        return ErasureOutcome(parent, parent, False, 0, 0)
    if rows_removed == table.num_rows:
        raise ValueError("a remediation may not remove every record of a dataset version")
    remaining = table.filter(pc.invert(removed))
    keys = remaining.column("subject_key").to_pylist()
    distinct = sorted(set(keys))
    position = {key: i for i, key in enumerate(distinct)}
    key_index = np.array([position[key] for key in keys], dtype=np.int64)
    groups = ingest.subject_record_groups(distinct, key_index, remaining.column("record_id").to_numpy())
    out_path = work_dir() / f"remediation-{uuid.uuid4().hex}.parquet"
    try:
        sha = ingest.write_version_file(remaining, out_path)
        origin = {
            "kind": "remediation", "job_id": job, "rows_removed": rows_removed,
            "subjects_removed": parent.subjects - len(groups), "parent_sha256": parent.sha256,
        }
        with stored_artifact(session, store, out_path, sha):
            version = add_version(
                session, dataset, sha, remaining.num_rows, len(groups), origin, parent,
                make_current=dataset.current_version == parent.version,
            )
            insert_subject_records(session, version.id, groups)
            session.flush()
    finally:
        out_path.unlink(missing_ok=True)
    return ErasureOutcome(version, parent, True, rows_removed, parent.subjects - len(groups))


def _indexed_rows(session: Session, version_id: uuid.UUID, keys: list[str]) -> dict[str, int]:
    """Subject key → number of records in the version, for the keys that have any."""
    found: dict[str, int] = {}
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start:start + IN_CHUNK]
        rows = session.execute(
            select(SubjectRecords.subject_key, SubjectRecords.record_ids).where(
                SubjectRecords.dataset_version_id == version_id, SubjectRecords.subject_key.in_(chunk)
            )
        )
        found.update({key: len(record_ids) for key, record_ids in rows})
    return found


def _copy_subject_records(session: Session, from_id: uuid.UUID, to_id: uuid.UUID, erased: list[str]) -> None:
    # One INSERT ... SELECT: the index rows never travel through Python. The erased keys are few
    # (one job's batch), so a NOT IN list stays small.
    query = select(
        literal(to_id, SubjectRecords.dataset_version_id.type), SubjectRecords.subject_key, SubjectRecords.record_ids
    ).where(SubjectRecords.dataset_version_id == from_id, SubjectRecords.subject_key.not_in(erased))
    session.execute(
        SubjectRecords.__table__.insert().from_select(["dataset_version_id", "subject_key", "record_ids"], query)
    )


def mark_version_destroyed(session: Session, version: DatasetVersion) -> str:
    """Mark the version destroyed and answer its file's hash. Whether the bytes go is decided by
    the caller, for every hash the destruction touches at once (`artifacts.service`): a file is
    content-addressed, so another version, of any client, may share it. Safe to repeat."""
    if version.destroyed_at is None:
        version.destroyed_at = utcnow()
    session.flush()
    return version.sha256
