"""The certificate signing keys: which one signs now, every one ever used with its validity, and
revocation. Rows hold only public halves (`signing_keys`); private halves are PEM files
(app/signing.py). Until the first rotation the ring is the service key alone, valid since the
first certificate; the first rotation records it as a row."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import pii, signing
from app.audit import service as audit_service
from app.certificates.models import SigningKey
from app.errors import Conflict, NotFound, Unprocessable

ALGORITHM = "Ed25519"
# The type of the key-ring document (`GET /v1/certificates/keys`, `obliviate signing-key export`).
RING_TYPE = "obliviate.certificate-signing-keys/v1"
# The audit stream of key rotations and revocations.
STREAM = "signing-keys"


@dataclass(frozen=True)
class PublishedKey:
    """A public key and its validity, as published to auditors."""

    key_id: str
    public_key: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    revoked_from: datetime | None = None
    revocation_reason: str | None = None

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_from else "retired" if self.valid_until else "active"

    def as_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return {
            "key_id": self.key_id, "algorithm": ALGORITHM, "public_key": self.public_key, "status": self.status,
            "valid_from": when(self.valid_from), "valid_until": when(self.valid_until),
            "revoked_from": when(self.revoked_from), "revocation_reason": self.revocation_reason,
        }


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 UTC time as written by this service, or None; a time without a zone is refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a time must be an ISO 8601 string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"the time {value!r} has no time zone")
    return parsed


def public_key_of(value: str) -> str:
    """`value` if it is a base64 Ed25519 public key; raises ValueError otherwise."""
    try:
        if len(base64.b64decode(value, validate=True)) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    return value


def single(public_b64: str) -> dict[str, PublishedKey]:
    """A ring of one key with no validity period: what `--public-key KEY` trusts."""
    key = public_key_of(public_b64)
    return {signing.key_id(key): PublishedKey(signing.key_id(key), key)}


def ring_from_document(document: object) -> dict[str, PublishedKey]:
    """The ring in an exported key file; raises ValueError on anything malformed, so a verifier
    never trusts half of a damaged file."""
    if not isinstance(document, dict) or document.get("type") != RING_TYPE:
        raise ValueError(f"not a key file of type {RING_TYPE}")
    if not isinstance(document.get("keys"), list):
        raise ValueError(f"not a key file of type {RING_TYPE}")
    ring: dict[str, PublishedKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("algorithm") != ALGORITHM:
            raise ValueError("a key entry is not an Ed25519 key")
        public = public_key_of(entry.get("public_key"))
        if entry.get("key_id") != signing.key_id(public):
            raise ValueError(f"key_id {entry.get('key_id')!r} does not name its public key")
        ring[entry["key_id"]] = PublishedKey(
            entry["key_id"], public, parse_time(entry.get("valid_from")), parse_time(entry.get("valid_until")),
            parse_time(entry.get("revoked_from")), entry.get("revocation_reason"),
        )
    return ring


def _published(row: SigningKey) -> PublishedKey:
    return PublishedKey(row.key_id, row.public_key, row.valid_from, row.valid_until, row.revoked_from,
                        row.revocation_reason)


def ring(session: Session, create_service_key: bool = False) -> dict[str, PublishedKey]:
    """Every certificate key, oldest first. `create_service_key`: a service that has never signed
    makes its key now (the API does, as `GET /v1/keys/signing` always did); a verifier does not."""
    rows = session.scalars(select(SigningKey).order_by(SigningKey.valid_from.is_not(None), SigningKey.valid_from)).all()
    if rows:
        return {row.key_id: _published(row) for row in rows}
    public = signing.public_key_b64() if create_service_key else signing.service_public_key_if_present()
    return single(public) if public else {}


def ring_document(keys: dict[str, PublishedKey]) -> dict[str, Any]:
    return {"type": RING_TYPE, "algorithm": ALGORITHM, "keys": [key.as_json() for key in keys.values()]}


def _active_row(session: Session, lock: bool = False) -> SigningKey | None:
    query = select(SigningKey).where(SigningKey.valid_until.is_(None))
    return session.scalars(query.with_for_update() if lock else query).first()


def active(session: Session) -> tuple[str, Ed25519PrivateKey]:
    """The key that signs certificates now: (public key base64, private key)."""
    row = _active_row(session)
    if row is None:
        return signing.public_key_b64(), signing.private_key()
    return row.public_key, signing.private_key_of(row.key_id)


def active_public_key(session: Session) -> str:
    """The public half of the key that signs now, without its private half (which a process
    that only publishes keys need not hold)."""
    row = _active_row(session)
    return row.public_key if row else signing.public_key_b64()


def rotate(session: Session, now: datetime, actor: str) -> PublishedKey:
    """Make a new key the signing one; the previous key stays valid for what it signed until now.
    Flushes only: the caller commits."""
    current = _active_row(session, lock=True)
    if current is None:
        service = signing.public_key_b64()
        current = SigningKey(key_id=signing.key_id(service), public_key=service, valid_from=None)
        session.add(current)
    identifier, key = signing.new_rotated_key()
    current.valid_until = now
    successor = SigningKey(key_id=identifier, public_key=signing.public_key_b64(key.public_key()), valid_from=now)
    session.add(successor)
    audit_service.append(session, STREAM, "signing_key.rotated", actor,
                         {"key_id": identifier, "previous_key_id": current.key_id})
    session.flush()
    return _published(successor)


def revoke(session: Session, identifier: str, revoked_from: datetime, reason: str, actor: str) -> PublishedKey:
    """Mark a retired key compromised from `revoked_from`: what it signed from then on is invalid."""
    # Published to auditors and kept in the append-only chain for good: no personal data.
    kind = pii.find_identifier(reason)
    if kind or len(reason) > 500:
        found = f" (found: {kind})" if kind else ""
        raise Unprocessable(f"The reason must be at most 500 characters without personal identifiers{found}.")
    row = session.get(SigningKey, identifier, with_for_update=True)
    if row is None:
        raise NotFound(f"No signing key {identifier}; `obliviate signing-key list` shows the keys.")
    if row.valid_until is None:
        raise Conflict(f"Signing key {identifier} signs certificates now: rotate first, then revoke it.")
    if row.revoked_from is not None and revoked_from > row.revoked_from:
        # Moving it later would make valid again what a thief may have signed meanwhile.
        raise Conflict(f"Signing key {identifier} is revoked from {row.revoked_from.isoformat()}; "
                       "a revocation only moves earlier.")
    row.revoked_from, row.revocation_reason = revoked_from, reason
    audit_service.append(session, STREAM, "signing_key.revoked", actor,
                         {"key_id": identifier, "revoked_from": revoked_from.isoformat(), "reason": reason})
    session.flush()
    return _published(row)
