"""Which review actions each status allows, and deadlines."""

from __future__ import annotations

from calendar import monthrange
from datetime import datetime, timedelta

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
MAX_EXTENSION_DAYS = 60


def due_at(jurisdiction: str, received_at: datetime) -> datetime:
    """GDPR Art. 12(3): one calendar month; CCPA §1798.130: 45 days."""
    if jurisdiction == "gdpr":
        return _one_month_later(received_at)
    if jurisdiction == "ccpa":
        return received_at + timedelta(days=45)
    raise ValueError(f"unknown jurisdiction {jurisdiction!r}")


def _one_month_later(at: datetime) -> datetime:
    """The same day of the next month, or its last day when shorter (31 January → 28 or 29
    February), as dateutil's relativedelta(months=1) computes it, at a fraction of its cost:
    intake computes it for every request."""
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))


def days_left(due: datetime, now: datetime) -> int:
    return int((due - now).total_seconds() // 86400)
