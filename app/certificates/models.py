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



class SigningKey(Base):
    """A certificate signing key and its validity: the public record an auditor keeps. The
    private half is a PEM file (app/signing.py), never a row. A key with no `valid_until` is the
    one that signs now; `revoked_from` marks it compromised from that time on."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    # None: the service key, valid since the first certificate.
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class RemediationCertificate(Base):
    """The signed certificate of remediation of one completed remediation request
    (`obliviate.certificate-of-remediation/v1`, app/certificates/remediation.py)."""

    __tablename__ = "remediation_certificates"

    remediation_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("remediation_requests.id"), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
