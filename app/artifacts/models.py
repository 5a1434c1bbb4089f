from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class PendingDeletion(Base):
    """Bytes that nothing live referenced when their last version was destroyed.

    Written in the transaction that destroys the versions, so the decision commits or rolls back
    with them; the bytes are deleted only afterwards, by `service.purge` (right after that commit,
    and by the beat sweeper for anything a crash left behind). A writer that starts to use the
    same content again removes the row first, so the sweeper never deletes bytes in use."""

    __tablename__ = "pending_artifact_deletions"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
