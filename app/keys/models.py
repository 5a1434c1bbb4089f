from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; the key itself is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # The tenant the key acts for: keys of one client see the same requests and models.
    client: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # The person who holds the key (a name, shown beside the key's name wherever it acted).
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The first characters of the key, to recognise it in listings without revealing it.
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # After this instant the key answers 401, as if revoked; None: it does not expire.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The key this one replaced by rotation, so a listing shows a key's lineage.
    rotated_from: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("api_keys.id"), nullable=True)

    def active_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())
