from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime


class ErasureRequest(Base):
    __tablename__ = "erasure_requests"
    __table_args__ = (
        UniqueConstraint("client", "external_id"),
        Index("ix_erasure_requests_client_received", "client", "received_at", "id"),
        Index("ix_erasure_requests_status_due", "status", "due_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    jurisdiction: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16))
    # Where a held request returns on release.
    held_from: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Deprecated alias of verification_status == "verified", kept for the API's `identity_verified`.
    identity_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # Requester verification (docs/identity-resolution.md): unverified | verified | failed, how
    # (portal | document | other) and when it was last set.
    verification_status: Mapped[str] = mapped_column(String(10), default="unverified", server_default="unverified")
    verification_method: Mapped[str | None] = mapped_column(String(10), nullable=True)
    verification_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Free text with the request's own identifiers redacted.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    subject_digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    extended_days: Mapped[int | None] = mapped_column(nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Unlearning progress and figures, filled by workers.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    subjects: Mapped[list[RequestSubject]] = relationship(
        back_populates="request", cascade="all, delete-orphan", lazy="selectin"
    )


class RequestSubject(Base):
    """One pseudonymised identifier of a request (a request may name several kinds)."""

    __tablename__ = "request_subjects"

    request_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("erasure_requests.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64), index=True)

    request: Mapped[ErasureRequest] = relationship(back_populates="subjects")
