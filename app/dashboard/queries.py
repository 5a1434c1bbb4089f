"""What the dashboard pages show, read through the same rules as the API: a client sees only its
own rows, an admin sees every client's. Reads only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.orm import Session, lazyload

from app.dashboard.models import AuditVerification
from app.db import utcnow
from app.jobs.models import Job
from app.keys.service import Principal
from app.pagination import decode_cursor, encode_cursor
from app.requests import lifecycle, regimes
from app.identities.models import RequestSearch
from app.requests.models import ErasureRequest, RequestSubject

STATUSES = ("received", "approved", "needs_review", "on_hold", "scheduled", "processing", "verifying",
            "completed", "failed", "denied", "cancelled")
SOURCES = ("portal", "admin", "batch")
JURISDICTIONS = regimes.SUPPORTED
PAGE_SIZE = 50
OPEN = tuple(sorted(set(STATUSES) - lifecycle.TERMINAL))


def _own(query, principal: Principal, column):
    return query if principal.is_admin else query.where(column == principal.client)


@dataclass
class Overview:
    by_status: dict[str, int]
    overdue: int
    due_soon: int
    jobs_running: int
    jobs_failed: int
    last_verification: AuditVerification | None


def overview(session: Session, principal: Principal, now: datetime | None = None) -> Overview:
    """Every request figure from one pass over the client's requests (counts by status, and of
    the open ones, those past due and those due within 7 days), then the job counts."""
    now = now or utcnow()
    is_open = ErasureRequest.status.in_(OPEN)
    soon = now + timedelta(days=7)
    rows = session.execute(_own(select(
        ErasureRequest.status, func.count(),
        func.count().filter(and_(is_open, ErasureRequest.due_at < now)),
        func.count().filter(and_(is_open, ErasureRequest.due_at >= now, ErasureRequest.due_at < soon)),
    ), principal, ErasureRequest.client).group_by(ErasureRequest.status)).all()
    counts = {status: count for status, count, _overdue, _soon in rows}
    jobs = dict(session.execute(
        _own(select(Job.status, func.count()), principal, Job.client).where(Job.status.in_(("running", "failed"))).group_by(Job.status)
    ).all())
    last = None
    if principal.is_admin:
        last = session.scalar(select(AuditVerification).order_by(AuditVerification.started_at.desc()).limit(1))
    return Overview({s: counts.get(s, 0) for s in STATUSES}, sum(r[2] for r in rows), sum(r[3] for r in rows),
                    jobs.get("running", 0), jobs.get("failed", 0), last)


@dataclass
class RequestFilters:
    status: str | None = None
    source: str | None = None
    jurisdiction: str | None = None
    overdue: bool | None = None
    due_within_days: int | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None
    search: str | None = None
    cursor: str | None = None
    errors: list[str] = field(default_factory=list)

    def query_args(self, **override) -> dict[str, str]:
        """The filters as query parameters, for links to the next page or a status figure."""
        values = {
            "status": self.status, "source": self.source, "jurisdiction": self.jurisdiction,
            "overdue": {True: "yes", False: "no"}.get(self.overdue) if self.overdue is not None else None,
            "due_within_days": self.due_within_days,
            "received_from": self.received_from.date().isoformat() if self.received_from else None,
            "received_to": (self.received_to - timedelta(days=1)).date().isoformat() if self.received_to else None,
            "q": self.search,
        }
        values.update(override)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


def parse_filters(params) -> RequestFilters:
    """Filters from the list page's query string. Unknown values are dropped with a message on the
    page, never a 500 and never an echo of what was typed in the search box."""
    filters = RequestFilters()
    for name, allowed in (("status", STATUSES), ("source", SOURCES), ("jurisdiction", JURISDICTIONS)):
        value = params.get(name) or None
        if value is not None and value not in allowed:
            filters.errors.append(f"Unknown {name}; showing all.")
            value = None
        setattr(filters, name, value)
    filters.overdue = {"yes": True, "no": False}.get(params.get("overdue") or "")
    if (params.get("due_within_days") or "").isdigit():
        filters.due_within_days = min(int(params["due_within_days"]), 365)
    for name, attr, shift in (("received_from", "received_from", 0), ("received_to", "received_to", 1)):
        raw = params.get(name) or ""
        if raw:
            try:
                day = datetime.fromisoformat(raw[:10]).replace(tzinfo=utcnow().tzinfo)
                setattr(filters, attr, day + timedelta(days=shift))
            except ValueError:
                filters.errors.append(f"{name.replace('_', ' ').capitalize()} is not a date (YYYY-MM-DD).")
    search = (params.get("q") or "").strip()
    filters.search = search[:200] or None
    cursor = params.get("cursor") or ""
    filters.cursor = cursor[:200] or None
    return filters


def list_requests(session: Session, principal: Principal, filters: RequestFilters, limit: int = PAGE_SIZE,
                  now: datetime | None = None) -> tuple[list[ErasureRequest], str | None]:
    """One page, newest first, with the API's cursor (received_at, id) so pages never overlap."""
    now = now or utcnow()
    # The list shows no subject rows: load them only if touched, not by a second eager query.
    query = _own(select(ErasureRequest).options(lazyload(ErasureRequest.subjects)), principal, ErasureRequest.client)
    for name in ("status", "source", "jurisdiction"):
        value = getattr(filters, name)
        if value:
            query = query.where(getattr(ErasureRequest, name) == value)
    if filters.overdue is True:
        query = query.where(ErasureRequest.due_at < now, ErasureRequest.status.in_(OPEN))
    elif filters.overdue is False:
        query = query.where(or_(ErasureRequest.due_at >= now, ErasureRequest.status.not_in(OPEN)))
    if filters.due_within_days is not None:
        query = query.where(ErasureRequest.status.in_(OPEN), ErasureRequest.due_at >= now,
                            ErasureRequest.due_at < now + timedelta(days=filters.due_within_days))
    if filters.received_from:
        query = query.where(ErasureRequest.received_at >= filters.received_from)
    if filters.received_to:
        query = query.where(ErasureRequest.received_at < filters.received_to)
    if filters.search:
        query = query.where(_search(filters.search))
    if filters.cursor:
        at, rid = decode_cursor(filters.cursor)
        query = query.where(or_(ErasureRequest.received_at < at,
                                and_(ErasureRequest.received_at == at, ErasureRequest.id < rid)))
    rows = list(session.scalars(
        query.order_by(ErasureRequest.received_at.desc(), ErasureRequest.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].received_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _search(text: str):
    """External ids that start with the text (a ticket prefix finds its series), or a request id."""
    prefix = ErasureRequest.external_id.startswith(text, autoescape=True)
    try:
        return or_(prefix, ErasureRequest.id == uuid.UUID(text))
    except ValueError:
        return prefix


# What became of a request, as the list names it; open requests have none yet.
OUTCOMES = {"completed": {"erased": "erased", "no_data_found": "no data"}, "denied": "denied",
            "needs_review": "needs review", "failed": "failed", "cancelled": "cancelled"}


def outcome_label(request: ErasureRequest) -> str | None:
    label = OUTCOMES.get(request.status)
    if isinstance(label, dict):
        return label.get(request.outcome or "", request.outcome)
    return label


def verification_label(request: ErasureRequest) -> str:
    method = f" ({request.verification_method})" if request.verification_method else ""
    return f"{request.verification_status}{method}"


EXPORT_LIMIT = 10_000
EXPORT_COLUMNS = ("request_id", "external_id", "client", "status", "outcome", "identity_verification",
                  "verification_method", "jurisdiction", "source", "received_at", "due_at", "decided_at",
                  "completed_at", "status_reason")


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @ would start a formula."""
    text = "" if value is None else value.isoformat() if isinstance(value, datetime) else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_rows(session: Session, principal: Principal, filters: RequestFilters) -> list[list[str]]:
    """Every request the filters select (at most EXPORT_LIMIT), newest first, as CSV cells."""
    filters.cursor = None
    rows: list[list[str]] = [list(EXPORT_COLUMNS)]
    while len(rows) <= EXPORT_LIMIT:
        page, filters.cursor = list_requests(session, principal, filters, limit=min(500, EXPORT_LIMIT + 1 - len(rows)))
        rows += [[_cell(v) for v in (
            r.id, r.external_id, r.client, r.status, outcome_label(r), r.verification_status, r.verification_method,
            r.jurisdiction, r.source, r.received_at, r.due_at, r.decided_at, r.completed_at, r.status_reason)]
            for r in page]
        if filters.cursor is None:
            break
    return rows


def days_left_class(request: ErasureRequest, now: datetime) -> str:
    if request.status in lifecycle.TERMINAL:
        return "done"
    days = lifecycle.days_left(request.due_at, now)
    return "overdue" if days < 0 else "soon" if days < 7 else "ok"


def allowed_actions(request: ErasureRequest) -> list[str]:
    """The review actions this request's status allows, in the order the page offers them."""
    actions = [a for a in ("approve", "deny", "hold", "release", "cancel") if request.status in lifecycle.REVIEW_ACTIONS[a][0]]
    if request.status in lifecycle.EXTENDABLE and request.extended_days is None:
        actions.append("extend")
    return actions


@dataclass(frozen=True)
class Erasure:
    request_id: uuid.UUID
    external_id: str | None
    completed_at: datetime | None
    outcome: str | None


def erasures_of(session: Session, principal: Principal, keys: Iterable[str]) -> list[Erasure]:
    """The completed requests that erased a subject: those naming one of its keys, or whose
    planning resolved to one through links (the links themselves go with the erasure)."""
    wanted = sorted(set(keys))
    if not wanted:
        return []
    searched = or_(*[cast(RequestSearch.pairs, String).like(f"%{key}%") for key in wanted])
    query = _own(select(ErasureRequest).options(lazyload(ErasureRequest.subjects)), principal, ErasureRequest.client).where(
        ErasureRequest.status == "completed",
        or_(ErasureRequest.id.in_(select(RequestSubject.request_id).where(RequestSubject.subject_key.in_(wanted))),
            ErasureRequest.id.in_(select(RequestSearch.request_id).where(searched))),
    ).order_by(ErasureRequest.completed_at.desc()).limit(20)
    return [Erasure(r.id, r.external_id, r.completed_at, r.outcome) for r in session.scalars(query)]
