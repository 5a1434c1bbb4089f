"""Datasets: registering uploads as versions and reading them back (docs/architecture.md, "One place commits": services only
flush; the caller's unit of work commits).

Nothing is half-stored: the upload is fully validated before the artifact is written, and the
artifact is removed again when the rows that would point at it fail to flush. Erasing subjects
from a version lives in erasure.py and is re-exported here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.artifacts.store import ArtifactStore, get_store
from app.config import get_settings
from app.datasets import images, ingest, text
from app.datasets.erasure import ErasureOutcome, erase_subjects, mark_version_destroyed
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.datasets.storage import (
    IN_CHUNK,
    add_tombstones,
    add_version,
    insert_subject_records,
    live_references,
    stored_artifact,
    tombstoned_keys,
    work_dir,
)
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.identities import service as identity_service
from app.keys.service import Principal
from app.pagination import newest_first_page
from app.pseudonym import KIND_PATTERN
from app.visibility import visible_one

__all__ = [
    "create_dataset", "get_dataset_for", "get_version_for", "current_version", "versions_of", "list_datasets",
    "erase_subjects", "mark_version_destroyed", "ErasureOutcome", "add_tombstones", "tombstoned_keys",
    "add_version", "insert_subject_records", "work_dir", "live_references", "get_dataset", "get_version",
    "holds_subjects", "versions_holding", "destroy_versions", "of_client",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def create_dataset(
    session: Session, principal: Principal, name: str, subject_column: str, subject_kind: str,
    label_column: str | None, feature_columns: Sequence[str] | None, upload_path: str | Path,
    *, store: ArtifactStore | None = None, text_column: str | None = None,
    identifier_columns: dict[str, str] | None = None, image_column: str | None = None,
) -> DatasetVersion:
    """Register an upload as version 1 of a new dataset, or as the next version of the client's
    dataset of that name (same subject kind, label column and feature columns, else 409).

    With `text_column` instead of `label_column` the upload is a text dataset (app.datasets.text);
    with `image_column` (and an optional `label_column`) an image dataset (app.datasets.images).
    `identifier_columns` (kind → column) link other identifiers to each row's subject
    (app/datasets/identifiers.py); the links are stored by app/identities/."""
    if not NAME_PATTERN.match(name or ""):
        raise Unprocessable("name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if not KIND_PATTERN.match(subject_kind or ""):
        raise Unprocessable("subject_kind is an identifier kind: a lower-case word (letters, digits, underscore).")
    if image_column is not None:
        if text_column is not None:
            raise Unprocessable("Give text_column (a text dataset) or image_column (an image dataset), not both.")
        if feature_columns:
            raise Unprocessable("feature_columns does not apply to an image dataset.")
    elif (label_column is None) == (text_column is None):
        raise Unprocessable("Give either label_column (a tabular dataset) or text_column (a text dataset), not both or neither.")
    if text_column is not None and feature_columns:
        raise Unprocessable("feature_columns does not apply to a text dataset.")
    store = store or get_store()
    secret = get_settings().resolved_secret_key()
    identifier_columns = identifier_columns or {}
    # The expensive part first and outside the transaction: on SQLite the unit of work holds
    # the write lock from its first statement.
    if image_column is not None:
        image_spec = images.ImageUploadSpec(subject_column, subject_kind, image_column, label_column, identifier_columns)
        parsed = images.read_image_upload(upload_path, image_spec, secret=secret)
    elif text_column is not None:
        parsed = text.read_text_upload(upload_path, text.TextUploadSpec(subject_column, subject_kind, text_column, identifier_columns), secret=secret)
    else:
        features = list(feature_columns) if feature_columns else None
        spec = ingest.UploadSpec(subject_column, subject_kind, label_column, features, identifier_columns)
        parsed = ingest.read_upload(upload_path, spec, secret=secret)
    dataset = session.scalar(
        select(Dataset).where(Dataset.client == principal.client, Dataset.name == name).with_for_update()
    )
    if dataset is not None:
        _check_image_compatible(dataset, image_column, label_column, getattr(parsed, "size", None))
        _check_compatible(dataset, subject_kind, label_column, text_column, getattr(parsed, "feature_columns", []))
    tombstoned = tombstoned_keys(session, principal.client, parsed.keys)
    out_path = work_dir() / f"version-{uuid.uuid4().hex}.parquet"
    try:
        if image_column is not None:
            built = images.build_image_version(parsed, out_path, tombstoned=tombstoned,
                                               classes=dataset.classes if dataset is not None else None)
        elif text_column is not None:
            built = text.build_text_version(parsed, out_path, tombstoned=tombstoned)
        else:
            built = ingest.build_version(
                parsed, out_path, tombstoned=tombstoned, classes=dataset.classes if dataset is not None else None
            )
        origin = {"kind": "upload", "filtered_rows": built.filtered_rows, "filtered_subjects": built.filtered_subjects}
        with stored_artifact(session, store, out_path, built.sha256) as sha:
            if dataset is None:
                dataset = _new_dataset(session, principal.client, name, subject_kind, label_column, built, text_column,
                                       image_column, getattr(parsed, "size", None))
            version = add_version(session, dataset, sha, built.rows, built.subjects, origin, parent=None)
            insert_subject_records(session, version.id, built.subject_records)
            identity_service.hold_kinds(session, principal.client, [subject_kind, *identifier_columns])
            # An erased subject's identifiers are not linked again (its rows were filtered out).
            identity_service.add_dataset_links(session, principal.client, dataset.id,
                                               [link for link in parsed.links if link[1][1] not in tombstoned])
            session.flush()
    finally:
        out_path.unlink(missing_ok=True)
    return version


def _check_compatible(
    dataset: Dataset, subject_kind: str, label_column: str | None, text_column: str | None, features: list[str],
) -> None:
    if dataset.subject_kind != subject_kind:
        raise Conflict(
            f"Dataset '{dataset.name}' holds subjects of kind '{dataset.subject_kind}', not '{subject_kind}'."
        )
    if dataset.is_image:
        return
    if dataset.is_text != (text_column is not None):
        raise Conflict(
            f"Dataset '{dataset.name}' is a {'text' if dataset.is_text else 'tabular'} dataset; "
            "upload the other kind under a new name."
        )
    if dataset.is_text:
        if dataset.text_column != text_column:
            raise Conflict(f"Dataset '{dataset.name}' uses text column '{dataset.text_column}', not '{text_column}'.")
        return
    if dataset.label_column != label_column:
        raise Conflict(f"Dataset '{dataset.name}' uses label column '{dataset.label_column}', not '{label_column}'.")
    if list(dataset.feature_columns) != list(features):
        raise Conflict(
            f"Dataset '{dataset.name}' has other feature columns (or another order); models trained on it "
            "need the same features. Upload it under a new name to change them."
        )


def _check_image_compatible(dataset: Dataset, image_column: str | None, label_column: str | None,
                            size: list[int] | None) -> None:
    """An image dataset takes images of its one size; the other kinds take no images."""
    if dataset.is_image != (image_column is not None):
        kind = dataset.kind
        raise Conflict(f"Dataset '{dataset.name}' is {'an' if kind == 'image' else 'a'} {kind} dataset; "
                       "upload the other kind under a new name.")
    if not dataset.is_image:
        return
    if dataset.image_column != image_column:
        raise Conflict(f"Dataset '{dataset.name}' uses image column '{dataset.image_column}', not '{image_column}'.")
    if dataset.label_column != (label_column or ""):
        raise Conflict(f"Dataset '{dataset.name}' uses label column '{dataset.label_column or None}', not '{label_column}'.")
    if list(dataset.image_size or []) != list(size or []):
        raise Conflict(
            f"Dataset '{dataset.name}' holds images of {dataset.image_size} (height, width, channels), not {size}; "
            "models trained on it need one size. Upload them under a new name."
        )


def _new_dataset(
    session: Session, client: str, name: str, kind: str, label_column: str | None, built, text_column: str | None,
    image_column: str | None = None, image_size: list[int] | None = None,
) -> Dataset:
    dataset = Dataset(
        client=client, name=name, subject_kind=kind, label_column=label_column or "", text_column=text_column,
        feature_columns=built.feature_columns, classes=built.classes, current_version=0, created_at=utcnow(),
        image_column=image_column, image_size=image_size,
    )
    try:
        with session.begin_nested():
            session.add(dataset)
            session.flush()
    except IntegrityError:
        raise Conflict(f"Dataset '{name}' is being created by another upload; retry to add a version.") from None
    return dataset


# Reading.


def get_dataset_for(session: Session, principal: Principal, dataset_id: uuid.UUID) -> Dataset:
    """The dataset, by its id or the id of one of its versions; another client's answers 404."""
    of_version = select(DatasetVersion.dataset_id).where(DatasetVersion.id == dataset_id)
    query = select(Dataset).where(or_(Dataset.id == dataset_id, Dataset.id.in_(of_version)))
    return visible_one(session, principal, query, Dataset.client, "No dataset with this id.")


def get_version_for(session: Session, principal: Principal, version_id: uuid.UUID) -> DatasetVersion:
    query = (
        select(DatasetVersion)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(DatasetVersion.id == version_id)
    )
    return visible_one(session, principal, query, Dataset.client, "No dataset version with this id.")


def current_version(session: Session, dataset: Dataset) -> DatasetVersion:
    return session.scalars(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.current_version
    )).one()


def versions_of(session: Session, dataset: Dataset) -> list[DatasetVersion]:
    return list(session.scalars(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id).order_by(DatasetVersion.version)
    ))


def list_datasets(
    session: Session, principal: Principal, *, limit: int = 50, cursor: str | None = None,
) -> tuple[list[Dataset], str | None]:
    query = select(Dataset)
    if not principal.is_admin:
        query = query.where(Dataset.client == principal.client)
    return newest_first_page(session, query, Dataset.created_at, Dataset.id, limit, cursor)



# The unlearning job's look-ups and destruction (app/unlearning/service.py orchestrates them).


def of_client(session: Session, client: str) -> list[Dataset]:
    """Every dataset of the client, by name: what an erasure searches (its certificate's scope)."""
    return list(session.scalars(select(Dataset).where(Dataset.client == client).order_by(Dataset.name, Dataset.id)))


def get_dataset(session: Session, dataset_id: uuid.UUID) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound("No dataset with this id.")
    return dataset


def get_version(session: Session, version_id: uuid.UUID) -> DatasetVersion:
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound("No dataset version with this id.")
    return version


def holds_subjects(session: Session, version_id: uuid.UUID, keys: Sequence[str]) -> bool:
    """Whether the lineage index lists any of these subjects in the version."""
    wanted = sorted(set(keys))
    return any(
        session.scalar(select(SubjectRecords.subject_key).where(
            SubjectRecords.dataset_version_id == version_id,
            SubjectRecords.subject_key.in_(wanted[start:start + IN_CHUNK])).limit(1)) is not None
        for start in range(0, len(wanted), IN_CHUNK)
    )


def versions_holding(session: Session, client: str, keys: Sequence[str]) -> set[uuid.UUID]:
    """The client's live (not destroyed) dataset versions whose lineage index lists any of the keys."""
    return set(session.scalars(
        select(SubjectRecords.dataset_version_id).join(DatasetVersion, DatasetVersion.id == SubjectRecords.dataset_version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(SubjectRecords.subject_key.in_(list(keys)), Dataset.client == client, DatasetVersion.destroyed_at.is_(None))
    ))


def destroy_versions(
    session: Session, version_ids: Iterable[uuid.UUID], keys: Sequence[str], *, in_use: set[uuid.UUID],
) -> tuple[list[dict[str, Any]], set[str]]:
    """Mark destroyed every given version that is neither its dataset's current one nor in
    `in_use` (a live model version was trained on it: that model's job destroys it), and drop
    the keys' lineage rows of those versions. Answers the `destroyed` entries of the job result
    and the file hashes whose bytes may go (the caller decides, for every hash at once)."""
    destroyed: list[dict[str, Any]] = []
    candidates: set[str] = set()
    for version_id in sorted(version_ids, key=str):
        version = get_version(session, version_id)
        dataset = get_dataset(session, version.dataset_id)
        if version.version == dataset.current_version or version.id in in_use:
            continue
        candidates.add(mark_version_destroyed(session, version))
        session.execute(delete(SubjectRecords).where(
            SubjectRecords.dataset_version_id == version.id, SubjectRecords.subject_key.in_(list(keys))))
        destroyed.append({"dataset_id": str(dataset.id), "version": version.version, "sha256": version.sha256})
    return destroyed, candidates
