"""API keys: creating, authenticating, listing, revoking and rotating them.

Every lifecycle change appends to the key's own audit chain (`key:<id>`) in the caller's
transaction (docs/architecture.md, "One place commits": services flush, the unit of work commits). A revoked or expired key
stops working within the principal cache's lifetime (at most 5 s) in every process.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.db import advisory_xact_lock, utcnow
from app.errors import BadRequest, Conflict, NotFound, Unprocessable
from app.keys.models import ApiKey
from app.pagination import newest_first_page
from app.principal import Principal

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
# Longest overlap a rotation may give the old key: long enough to roll a fleet, short enough
# that a rotation meant to cut off a leaked key does so.
MAX_GRACE_SECONDS = 7 * 24 * 3600
STATES = ("active", "revoked", "expired")


class InvalidScopes(ValueError):
    pass


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


def key_stream(key_id) -> str:
    return f"key:{key_id}"


def state_of(key: ApiKey, now: datetime | None = None) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "active" if key.active_at(now or utcnow()) else "expired"


def create_key(
    session: Session, name: str, scopes: list[str], client: str | None = None, *,
    expires_at: datetime | None = None, actor: str = "cli", rotated_from: ApiKey | None = None,
    owner: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is shown once and never stored. `owner`: the person who
    holds it, shown with the key's name wherever the key acted."""
    if expires_at is not None and expires_at <= utcnow():
        raise Unprocessable("expires_at must be in the future.")
    client = _checked_client(session, client or name)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=uuid.uuid4(), client=client, name=name, owner=owner, prefix=plaintext[:12], key_hash=hash_key(plaintext),
        scopes=" ".join(parse_scopes(scopes)), created_at=utcnow(), expires_at=expires_at,
        rotated_from=rotated_from.id if rotated_from is not None else None,
    )
    session.add(key)
    session.flush()
    audit_service.append(session, key_stream(key.id), "key.created", actor, {
        "client": key.client, "name": key.name, "owner": key.owner, "prefix": key.prefix, "scopes": key.scopes.split(),
        "expires_at": _iso(expires_at), "rotated_from": str(key.rotated_from) if key.rotated_from else None,
    })
    return key, plaintext


def _client_likeness(client: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", client).split()).casefold()


def _checked_client(session: Session, client: str) -> str:
    """The client a new key acts for. A client is a tenant, so a name that differs from an
    existing one only in case or spacing ("A " beside "a") is refused rather than made a second
    tenant, and rather than quietly joined to the first (which would hand it that tenant's data).
    An existing name is taken exactly as it is, whatever its form, so existing clients keep
    working; a new one must be written plainly (no surrounding or repeated spaces)."""
    likeness = _client_likeness(client)
    # Concurrent creations of two look-alikes meet here: the second sees the first.
    advisory_xact_lock(session, f"obliviate:client:{likeness}")
    known = set(session.scalars(select(ApiKey.client).distinct()))
    if client in known:
        return client
    twins = sorted(name for name in known if _client_likeness(name) == likeness)
    if twins:
        raise Conflict(f"Client {client!r} differs from the existing client {twins[0]!r} only in case or spacing; "
                       "use the existing name exactly, or a distinct one.")
    if client != " ".join(client.split()):
        raise Unprocessable("A new client's name must not begin or end with spaces, nor hold runs of them.")
    return client


def get_key(session: Session, key_id: uuid.UUID | str, *, lock: bool = False) -> ApiKey:
    try:
        key_uuid = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id))
    except ValueError:
        raise NotFound("No API key with this id.") from None
    query = select(ApiKey).where(ApiKey.id == key_uuid)
    key = session.scalar(query.with_for_update() if lock else query)
    if key is None:
        raise NotFound("No API key with this id.")
    return key


def revoke_key(session: Session, key_id: uuid.UUID | str, *, actor: str = "cli", reason: str | None = None) -> ApiKey:
    """Revoke now. Revoking a revoked key changes nothing and records nothing."""
    key = get_key(session, key_id, lock=True)
    if key.revoked_at is not None:
        return key
    key.revoked_at = utcnow()
    audit_service.append(session, key_stream(key.id), "key.revoked", actor, {"reason": reason})
    session.flush()
    _forget(key.key_hash)
    return key


def rotate_key(
    session: Session, key_id: uuid.UUID | str, *, actor: str = "cli", grace_seconds: int = 0,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str, ApiKey]:
    """A successor with the same client, name and scopes, and the old key ended: revoked now, or,
    with a grace period, expiring at its end (never later than it would have anyway)."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise Unprocessable(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}.")
    old = get_key(session, key_id, lock=True)
    now = utcnow()
    if not old.active_at(now):
        raise Conflict(f"The key is {state_of(old, now)}; only an active key can be rotated.")
    # A key in its grace period is still active; a second rotation would leave it two live
    # successors. The lock above orders concurrent rotations, so the second sees the first's.
    successor = session.scalar(select(ApiKey.id).where(ApiKey.rotated_from == old.id).limit(1))
    if successor is not None:
        raise Conflict(f"The key was already rotated (successor {successor}); rotate the successor instead.")
    new, plaintext = create_key(
        session, old.name, old.scopes.split(), old.client, expires_at=expires_at, actor=actor, rotated_from=old,
        owner=old.owner,
    )
    if grace_seconds:
        ends = now + timedelta(seconds=grace_seconds)
        old.expires_at = min(old.expires_at, ends) if old.expires_at is not None else ends
    else:
        old.revoked_at = now
    audit_service.append(session, key_stream(old.id), "key.rotated", actor, {
        "successor": str(new.id), "grace_seconds": grace_seconds,
        "ends_at": _iso(old.revoked_at or old.expires_at),
    })
    session.flush()
    _forget(old.key_hash)
    return new, plaintext, old


def key_is_active(session: Session, key_id: uuid.UUID | str) -> bool:
    """Whether a key may still act: not revoked, not expired. A dashboard session made with a
    key calls this on every request, so the session ends when its key does."""
    try:
        key = get_key(session, key_id)
    except NotFound:
        return False
    return key.active_at(utcnow())


def list_keys(
    session: Session, *, client: str | None = None, state: str | None = None, limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[ApiKey], str | None]:
    """Newest first; `state` is active, revoked or expired."""
    query = select(ApiKey)
    if client is not None:
        query = query.where(ApiKey.client == client)
    now = utcnow()
    if state == "revoked":
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif state == "expired":
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    elif state == "active":
        query = query.where(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
    elif state is not None:
        raise BadRequest(f"state is one of {', '.join(STATES)}.")
    return newest_first_page(session, query, ApiKey.created_at, ApiKey.id, limit, cursor)


def prefix_exists(session: Session, prefix: str) -> bool:
    """Whether some key, in any state, starts with `prefix` (a listing shows it: not a secret)."""
    return session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix).limit(1)) is not None


def authenticate(session: Session, plaintext: str) -> Principal | None:
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or not key.active_at(utcnow()):
        return None
    return Principal(str(key.id), key.client, key.name, key.scope_set, key.expires_at)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None




# The principal cache. Entries live principal_cache_seconds (at most 5): that bounds how long
# another process may still accept a key revoked here. This process forgets a key at once.
_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def cached_principal(plaintext: str) -> tuple[bool, Principal | None]:
    """(found, principal) from the cache alone, never touching the database. An entry past its
    key's expiry answers "no principal" at once, whatever its age."""
    with _cache_lock:
        hit = _cache.get(hash_key(plaintext))
    if hit is None or hit[0] <= time.monotonic():
        return False, None
    principal = hit[1]
    if principal is not None and principal.expires_at is not None and principal.expires_at <= utcnow():
        return True, None
    return True, principal


def authenticate_cached(plaintext: str) -> Principal | None:
    """authenticate() with a few seconds of memory, so that intake does not pay a key lookup
    per request."""
    from app.config import get_settings
    from app.db import read_session

    found, principal = cached_principal(plaintext)
    if found:
        return principal
    digest = hash_key(plaintext)
    valid_until = time.monotonic() + get_settings().principal_cache_seconds
    # Read-only: on SQLite a plain BEGIN, which neither waits for a writer nor holds one up.
    with read_session() as session:
        principal = authenticate(session, plaintext)
        session.rollback()
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (valid_until, principal)
    return principal


def _forget(key_hash: str) -> None:
    with _cache_lock:
        _cache.pop(key_hash, None)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def actor_labels(session: Session, actors: Iterable[str]) -> dict[str, str]:
    """How to name each actor of an audit trail: a key by its name and owner ("portal (Ana Lima)"),
    never by its bare id; policies, workers and the command line as they are."""
    ids = {}
    for actor in set(actors):
        if actor.startswith("key:"):
            try:
                ids[actor] = uuid.UUID(actor[4:])
            except ValueError:
                continue
    keys = {key.id: key for key in session.scalars(select(ApiKey).where(ApiKey.id.in_(sorted(set(ids.values())))))} if ids else {}
    labels = {actor: actor for actor in actors}
    for actor, key_id in ids.items():
        key = keys.get(key_id)
        if key is not None:
            labels[actor] = f"key {key.name} ({key.owner})" if key.owner else f"key {key.name} (no owner recorded)"
        else:
            labels[actor] = "an unknown key"
    return labels
