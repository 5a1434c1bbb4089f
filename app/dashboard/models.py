"""The dashboard's own tables: browser sessions, failed logins (the rate limit), audit verifications."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

# SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class DashboardSession(Base):
    """A signed-in browser. The cookie holds a random id; only its SHA-256 is stored, so a copy of
    the table cannot be replayed as cookies. Deleting a row signs that browser out."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    # Compared with the token every state-changing form posts back (constant-time).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Absolute end, however active the session is; the idle end is last_seen_at + the idle setting.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    """One failed sign-in, in its bucket: the client address, or `key:<prefix>` when the attempt
    named an existing key (app/dashboard/service.py, login_bucket). A row per failure (not a
    counter) so that processes record failures concurrently without lost updates; rows older
    than the window are removed whenever a failure is recorded."""

    __tablename__ = "dashboard_login_failures"
    __table_args__ = (Index("ix_dashboard_login_failures_address_at", "address", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The column kept its first name, from when only addresses were counted.
    bucket: Mapped[str] = mapped_column("address", String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditVerification(Base):
    """One run of the whole audit log's verification, started from the dashboard and carried out
    in the background; the page polls this row for progress and the verdict."""

    __tablename__ = "dashboard_audit_verifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    started_by: Mapped[str] = mapped_column(String(200))
    chains_total: Mapped[int] = mapped_column(Integer)
    chains_done: Mapped[int] = mapped_column(Integer)
    # {"valid": bool, "chains": n, "events": n, "broken": [{"stream", "seq", "problem"}...]}
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
