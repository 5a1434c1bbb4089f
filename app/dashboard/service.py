"""Dashboard sessions, CSRF tokens and the failed sign-in limit. Flushes only; the caller commits.

The session cookie carries `secrets.token_urlsafe(32)`; the table keeps its SHA-256, so the
cookie is the only copy of the secret. Each session has its own random CSRF token, kept
server-side and compared in constant time (`hmac.compare_digest`): no signing scheme of our own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.dashboard.models import DashboardSession, LoginFailure
from app.db import advisory_xact_lock, utcnow
from app.keys import service as key_service
from app.keys.models import ApiKey
from app.keys.service import Principal

COOKIE = "obliviate_session"
# A page view refreshes last_seen_at at most this often: one write a minute per session, not
# one per click, and the idle expiry is exact to within this.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Viewer:
    """The signed-in browser: its key's principal and the session's CSRF token."""

    principal: Principal
    csrf_token: str


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _key_active(session: Session, key: ApiKey | None) -> bool:
    """Whether a session's key may still act, by the keys domain's own rule (not revoked, not
    expired): a key that ends ends its dashboard sessions at the next click."""
    return key is not None and key_service.key_is_active(session, key.id)


def login(session: Session, plaintext: str) -> tuple[str, Viewer] | None:
    """(cookie value, viewer) for a valid key, or None. Says nothing about why a key failed."""
    principal = key_service.authenticate(session, plaintext.strip())
    if principal is None:
        return None
    now = utcnow()
    settings = get_settings()
    session_id = secrets.token_urlsafe(32)
    row = DashboardSession(
        id_hash=_digest(session_id), key_id=uuid.UUID(principal.key_id), csrf_token=secrets.token_urlsafe(32),
        created_at=now, last_seen_at=now, expires_at=now + timedelta(seconds=settings.dashboard_session_seconds),
    )
    session.add(row)
    session.flush()
    return session_id, Viewer(principal, row.csrf_token)


def resume(session: Session, session_id: str | None, now: datetime | None = None) -> Viewer | None:
    """The viewer of a cookie, or None when the session is unknown, idle too long, past its
    absolute end, or its key is no longer active. Expired rows are removed on sight."""
    if not session_id or len(session_id) > 100:
        return None
    now = now or utcnow()
    row = session.get(DashboardSession, _digest(session_id))
    if row is None:
        return None
    idle = timedelta(seconds=get_settings().dashboard_idle_seconds)
    key = session.get(ApiKey, row.key_id)
    if now >= row.expires_at or now >= row.last_seen_at + idle or not _key_active(session, key):
        session.delete(row)
        session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    principal = Principal(str(key.id), key.client, key.name, key.scope_set)
    return Viewer(principal, row.csrf_token)


def logout(session: Session, session_id: str | None) -> None:
    if session_id:
        session.execute(delete(DashboardSession).where(DashboardSession.id_hash == _digest(session_id)))


def end_sessions_of_key(session: Session, key_id) -> int:
    """Remove every session of a key (after revoking it): the next click of each goes to login."""
    return session.execute(delete(DashboardSession).where(DashboardSession.key_id == key_id)).rowcount or 0


def csrf_valid(viewer: Viewer, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(viewer.csrf_token.encode(), str(token).encode())


# The characters of a key that name it (ApiKey.prefix): "obl_" and eight random ones.
_PREFIX_LENGTH = 12


def login_bucket(session: Session, address: str, plaintext: str) -> str:
    """Where a sign-in's failures are counted. An attempt that names an existing key (by its
    prefix) counts against that key, from whatever address: a shared address full of someone
    else's failures does not lock a valid key out, and rotating addresses does not multiply the
    guesses at one key. Any other attempt counts against its address."""
    prefix = plaintext.strip()[:_PREFIX_LENGTH]
    if len(prefix) == _PREFIX_LENGTH and prefix.startswith(key_service.KEY_PREFIX) and key_service.prefix_exists(session, prefix):
        return f"key:{prefix}"
    return address[:64]


def claim_login_attempt(session: Session, bucket: str, now: datetime | None = None) -> bool:
    """Whether a sign-in counted in `bucket` may be tried now: False once the bucket has used
    up its failures for the window. The bucket stays locked until the transaction ends, so
    concurrent attempts are counted one after another and a burst gets exactly the allowed
    number of tries (SQLite's BEGIN IMMEDIATE already serialises every writer)."""
    settings = get_settings()
    advisory_xact_lock(session, f"obliviate:sign-in:{bucket}")
    since = (now or utcnow()) - timedelta(seconds=settings.dashboard_login_window_seconds)
    failures = session.scalar(
        select(func.count()).select_from(LoginFailure).where(LoginFailure.bucket == bucket, LoginFailure.at >= since)
    )
    return (failures or 0) < settings.dashboard_login_attempts


def record_failure(session: Session, bucket: str, now: datetime | None = None) -> None:
    now = now or utcnow()
    since = now - timedelta(seconds=get_settings().dashboard_login_window_seconds)
    # Every bucket's expired rows, not only this one's: the table never holds more than one
    # window of failures, however many addresses tried once and left.
    session.execute(delete(LoginFailure).where(LoginFailure.at < since))
    session.add(LoginFailure(bucket=bucket, at=now))
    session.flush()


@lru_cache(maxsize=8)
def _trusted(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip())


def _is_trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None) -> str:
    """The address the rate limit counts: the peer, unless the peer is a trusted proxy, in which
    case the X-Forwarded-For entries are read right to left past every trusted proxy (the
    leftmost entries are whatever the client chose to send)."""
    peer = peer or "unknown"
    networks = _trusted(get_settings().trusted_proxies)
    if not forwarded_for or not _is_trusted(peer, networks):
        return peer[:64]
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop[:64]
    return (hops[0] if hops else peer)[:64]


def revoke_key(session: Session, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key from the keys page (the keys domain audits it, with the admin as actor) and
    end its dashboard sessions at once rather than at their next click. Unknown id: NotFound."""
    key = key_service.revoke_key(session, key_id, actor=principal.actor)
    end_sessions_of_key(session, key.id)
    session.flush()
    return key
