from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class RemediationRequest(Base):
    """A request to remove a slice of a dataset chosen by what the records are (bias, poisoning,
    a withdrawn licence, quality), with its dry run, its four-eyes approval and its outcome
    (docs/remediation.md). Its history is the audit chain `remediation:<id>`."""

    __tablename__ = "remediation_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # bias | poisoning | licence | quality
    reason: Mapped[str] = mapped_column(Text)
    # pending_approval → approved → processing → completed | failed; or denied.
    status: Mapped[str] = mapped_column(String(32))
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("datasets.id"))
    # The models the slice is removed from (every live model of the dataset when none was named).
    model_ids: Mapped[list[str]] = mapped_column(JSON)
    # {"by": "predicate"|"record_ids"|"source", ...}: how the slice was chosen (never identifiers).
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The canonical predicate text (a source selection is stored as its predicate); None for a
    # selection by record ids.
    predicate: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Poisoning: {"features": {name: value}, "target_label": class}.
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Bias: the group column whose per-group metrics are compared.
    group_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    override_fraction: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the request would do, computed at creation (and again when approved).
    dry_run: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What it did: dataset versions, models, checks.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    approved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
