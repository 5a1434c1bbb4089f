from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("client", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    # The identifier kind of the subject column (email, user_id, ...), matching request identifiers.
    subject_kind: Mapped[str] = mapped_column(String(64))
    # Tabular datasets: the label column and the feature columns. Text datasets have no label
    # ("") and no features; `text_column` names the upload's column of training text.
    label_column: Mapped[str] = mapped_column(String(200))
    text_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    feature_columns: Mapped[list[str]] = mapped_column(JSON)
    # Label values in class-index order; stored files hold the index.
    classes: Mapped[list[Any]] = mapped_column(JSON)
    # Image datasets: the upload's column of image bytes (Parquet) or "file" (a zip and its
    # manifest), and the one size of every image, [height, width, channels]. No features; the
    # label column is "" when the upload had none (every stored label 0, no classes).
    image_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    image_size: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def is_text(self) -> bool:
        return self.text_column is not None

    @property
    def is_image(self) -> bool:
        return self.image_column is not None

    @property
    def kind(self) -> str:
        """What families train on it: "tabular", "text" or "image" (FamilySpec.data_kind)."""
        return "image" if self.is_image else "text" if self.is_text else "tabular"


class DatasetVersion(Base):
    """One immutable stored file: Parquet with columns record_id (int64, stable across versions),
    subject_key (hex string), then label (int64 class index) and the float32 feature columns of
    a tabular dataset, `text` (UTF-8 string) of a text dataset, or label and `image` (PNG bytes,
    re-encoded without metadata, mode "L" or "RGB") of an image dataset."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    subjects: Mapped[int] = mapped_column(Integer)
    parent_version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # {"kind": "upload"} or {"kind": "erasure", "job_id": ..., "rows_removed": n}
    origin: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when the file was destroyed because it still held an erased subject.
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SubjectRecords(Base):
    """The lineage index: which records of a dataset version belong to a subject.

    One row per (version, subject), looked up by subject_key through an index, never a scan."""

    __tablename__ = "subject_records"
    __table_args__ = (Index("ix_subject_records_subject_key", "subject_key"),)

    dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    subject_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_ids: Mapped[list[int]] = mapped_column(JSON)


class Tombstone(Base):
    """A subject erased from a client's data; uploads and imports filter these keys out so a
    later retrain cannot bring the person back."""

    __tablename__ = "tombstones"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DatasetGrant(Base):
    """Another client's permission to train or import models on this dataset. Without one, a
    dataset is reachable only by its own client, admin keys included (app/datasets/grants.py)."""

    __tablename__ = "dataset_grants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("datasets.id"), index=True)
    grantee_client: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
