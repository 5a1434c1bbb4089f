from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Job(Base):
    """The unit of background work. The row is the truth; a Celery message only points at it.

    A worker claims it with one conditional UPDATE (status, attempt += 1, lease_until), renews the
    lease while it works and commits results only WHERE attempt = its own (fencing)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_lease", "status", "lease_until"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # training | unlearning | references | rehearsal | audit_verify
    status: Mapped[str] = mapped_column(String(16))  # queued | running | completed | failed
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("models.id"), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Attempts whose lease expired without the worker giving the job back: the process died
    # (most often killed for memory). The sweeper fails the job at job_max_lost_leases.
    lost_leases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Earliest time a (re)try may start: backoff after transient errors, batch windows.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobRequest(Base):
    """Which erasure requests an unlearning job serves. A job coalesces the requests of one
    batch window for one model; a request whose subject sits in several models waits on several
    jobs."""

    __tablename__ = "job_requests"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("erasure_requests.id"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
