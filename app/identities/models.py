"""The identities domain's tables: which pseudonyms denote one person, which identifier kinds a
client holds, and what each request's resolution searched (docs/identity-resolution.md).

Every key here is a subject key from app/pseudonym.py (the HMAC of kind and normalised value);
raw identifiers are never stored."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class IdentityLink(Base):
    """Two pseudonyms of one client that denote the same person: an identifier column's value
    and its row's subject (`origin` "dataset"), or a pair a client declared ("declared"). Stored
    once, with key_a < key_b; a look-up walks both columns."""

    __tablename__ = "identity_links"
    __table_args__ = (Index("ix_identity_links_client_key_b", "client", "key_b"),)

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    key_a: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_b: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind_a: Mapped[str] = mapped_column(String(64))
    kind_b: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16))
    # The dataset whose upload declared the link; None for a declared link.
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HeldKind(Base):
    """An identifier kind some dataset (subject column or identifier column) or declared link of
    the client holds. Requests made only of kinds not held here find nothing, whatever the value."""

    __tablename__ = "held_identifier_kinds"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RequestSearch(Base):
    """What planning a request searched: the identifier kinds, the (kind, subject key) pairs its
    identifiers resolved to, and every dataset and model checked with whether it held the
    person. Read by `service.searched_for` (the request's API view, later its certificate)."""

    __tablename__ = "request_searches"

    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kinds: Mapped[list[str]] = mapped_column(JSON)
    # [[kind, subject_key], ...], sorted
    pairs: Mapped[list[list[str]]] = mapped_column(JSON)
    # [{"type": "dataset"|"model", "id", "name", "version", "held": bool}, ...]
    checked: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    searched_at: Mapped[datetime] = mapped_column(UTCDateTime)
