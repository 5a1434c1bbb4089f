from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

# SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class AuditEvent(Base):
    """One link of a hash chain. Append-only: triggers refuse DELETE, and every UPDATE except the
    checkpointer's one write of `log_index` into an event that has none."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("stream", "seq"),
        Index("ix_audit_events_log_index", "log_index", unique=True),
        # The checkpointer's work list: events committed but not yet in the log.
        Index("ix_audit_events_unsequenced", "id", postgresql_where=text("log_index IS NULL"),
              sqlite_where=text("log_index IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The chain this event belongs to, e.g. "request:<uuid>".
    stream: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Position in the one log over all events (0-based), the leaf order of the Merkle tree that
    # checkpoints sign. Filled by the checkpointer after commit, so writers never wait for it.
    log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditHead(Base):
    """The last link of each chain. It serialises appends per stream (a row lock) and lets
    verification notice a truncated tail, which a chain alone cannot show. Triggers allow only
    forward moves (a higher seq) and refuse DELETE."""

    __tablename__ = "audit_heads"

    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed tree head of the audit log (a C2SP checkpoint note). Append-only (triggers), and
    also written outside the database (app/audit/checkpoints.py) for auditors to keep."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    # The right edge of the tree (hex node hashes), so the next checkpoint hashes only new events.
    frontier: Mapped[list[str]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
