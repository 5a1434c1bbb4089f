from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.keys.models import ApiKey

SCOPES = (
    "requests:write",
    "requests:read",
    "requests:review",
    "models:write",
    "models:read",
    # An auditor's key: the signed audit checkpoints, nothing of any client's requests.
    "audit:read",
    "admin",
)
KEY_PREFIX = "obl_"


class InvalidScopes(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its client (tenant) and its scopes. Admins see every client."""

    key_id: str
    client: str
    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def has(self, scope: str) -> bool:
        return scope in self.scopes or self.is_admin


def hash_key(plaintext: str) -> str:
    # Keys carry 256 bits of randomness, so a plain digest is enough: nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    scopes = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidScopes(f"unknown or missing scopes {unknown}; choose from {', '.join(SCOPES)}")
    return scopes


def create_key(session: Session, name: str, scopes: list[str], client: str | None = None) -> tuple[ApiKey, str]:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        client=client or name, name=name, prefix=plaintext[:12], key_hash=hash_key(plaintext),
        scopes=" ".join(parse_scopes(scopes)),
    )
    session.add(key)
    session.flush()
    return key, plaintext


def authenticate(session: Session, plaintext: str) -> Principal | None:
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(str(key.id), key.client, key.name, key.scope_set)


_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def cached_principal(plaintext: str) -> tuple[bool, Principal | None]:
    """(found, principal) from the cache alone, never touching the database."""
    with _cache_lock:
        hit = _cache.get(hash_key(plaintext))
    if hit is not None and hit[0] > time.monotonic():
        return True, hit[1]
    return False, None


def authenticate_cached(plaintext: str) -> Principal | None:
    """authenticate() with a few seconds of memory: a revoked key stops working within
    _CACHE_SECONDS, and intake does not pay a key lookup per request."""
    from app.db import get_sessionmaker

    found, principal = cached_principal(plaintext)
    if found:
        return principal
    digest = hash_key(plaintext)
    now = time.monotonic()
    with get_sessionmaker()() as session:
        principal = authenticate(session, plaintext)
        session.rollback()
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (now + _CACHE_SECONDS, principal)
    return principal


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
