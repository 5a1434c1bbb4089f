"""The caller of an API request, as an authenticated API key makes it (app/keys/service.py).

A module of its own, torch- and table-free, so that the HTTP layer (app/routing.py,
app/idempotency/http.py) can name the caller without importing the keys package, whose router
imports that layer. `app.keys.service.Principal` is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its client (tenant) and its scopes. Admins see every client."""

    key_id: str
    client: str
    name: str
    scopes: frozenset[str]
    # Checked on every use of a cached principal, so a key stops at its expiry to the second.
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def has(self, scope: str) -> bool:
        return scope in self.scopes or self.is_admin
