"""Which review actions each status allows, and deadlines."""

from __future__ import annotations

from datetime import datetime

from app.requests import regimes

TERMINAL = frozenset({"denied", "cancelled", "completed", "failed"})

# action → (statuses it may start from, status it leads to; None = back to where the hold began)
REVIEW_ACTIONS: dict[str, tuple[frozenset[str], str | None]] = {
    # needs_review: planning found the request's identifiers cannot be resolved as they are
    # (app/identities/); approving it again plans it again, with the links it has by then.
    "approve": (frozenset({"received", "needs_review"}), "approved"),
    "deny": (frozenset({"received", "needs_review", "on_hold"}), "denied"),
    # Only before processing: once a worker edits data, the erasure runs to its end.
    "cancel": (frozenset({"received", "approved", "needs_review", "on_hold", "scheduled"}), "cancelled"),
    "hold": (frozenset({"received", "approved", "scheduled"}), "on_hold"),
    "release": (frozenset({"on_hold"}), None),
}
EXTENDABLE = frozenset({"received", "approved", "needs_review", "on_hold", "scheduled", "processing", "verifying"})
MAX_EXTENSION_DAYS = regimes.LONGEST_EXTENSION_DAYS


def due_at(jurisdiction: str, received_at: datetime) -> datetime:
    """The regime's deadline (app/requests/regimes.py): GDPR Art. 12(3) one calendar month,
    CCPA §1798.130 45 days, ..."""
    return regimes.regime(jurisdiction).due_at(received_at)


def days_left(due: datetime, now: datetime) -> int:
    return int((due - now).total_seconds() // 86400)
