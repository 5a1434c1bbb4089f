from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Certificate(Base):
    """The signed certificate of erasure of one completed request."""

    __tablename__ = "certificates"

    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("erasure_requests.id"), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    # The signer's Ed25519 public key (base64), kept so certificates verify after a key rotation.
    public_key: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
