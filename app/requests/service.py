"""Erasure requests: intake, review transitions, queries. Flushes only; the caller commits."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app import metrics
from app.audit import erasure_log
from app.audit import service as audit_service
from app.config import get_settings
from app.db import is_postgres, utcnow
from app.errors import Conflict, InvalidTransition, NotFound, Unprocessable
from app.keys.service import Principal
from app.pagination import decode_cursor, encode_cursor
from app.pii import find_identifier
from app.pseudonym import names_subject, redact, subject_digest, subject_keys
from app.requests import intake, lifecycle, regimes
from app.requests.models import ErasureRequest
from app.requests.schemas import (
    REASON_REFUSED, ErasureRequestCreate, ErasureRequestOut, IdentityVerification, IdentityVerificationOut,
)
from app.webhooks import service as webhook_service

AUTO_APPROVER = "policy:auto-approve-verified"
EVENT_NAMES = {
    "approve": "approved", "deny": "denied", "cancel": "cancelled", "hold": "held", "release": "released",
    # Moves made by workers.
    "review": "needs_review", "schedule": "scheduled", "process": "processing", "verify": "verifying", "complete": "completed", "fail": "failed",
}


# What intake hands back: a stored row, or a new one as written (see intake.StoredRequest).
AnyRequest = ErasureRequest | intake.StoredRequest


def to_out(request: AnyRequest, now: datetime | None = None) -> ErasureRequestOut:
    now = now or utcnow()
    return ErasureRequestOut(
        id=request.id, status=request.status, jurisdiction=request.jurisdiction, source=request.source,
        external_id=request.external_id, identity_verified=request.verification_status == "verified",
        identity_verification=IdentityVerificationOut(
            status=request.verification_status, method=request.verification_method, at=request.verification_at),
        received_at=request.received_at, due_at=request.due_at,
        days_left=lifecycle.days_left(request.due_at, now), extended_days=request.extended_days,
        reason=request.reason, status_reason=request.status_reason, decided_at=request.decided_at,
        completed_at=request.completed_at, outcome=request.outcome, progress=request.progress,
        updated_at=request.updated_at,
    )


def create(session: Session, principal: Principal, payload: ErasureRequestCreate) -> tuple[AnyRequest, bool]:
    """Returns (request, created). An existing (client, external_id) is returned, not duplicated,
    if it names the same subject; another subject raises ExternalIdTaken (409)."""
    outcome = create_many(session, principal, [payload])[0]
    if isinstance(outcome, ExternalIdTaken):
        raise outcome
    return outcome


class ExternalIdTaken(Conflict):
    """The external_id names a request for another subject: answering with that request would
    tell the caller about someone else's erasure and silently drop this one."""

    title, slug = "external_id already used", "external-id-conflict"

    def __init__(self):
        super().__init__(
            "This external_id already names an erasure request for a different subject. Use a new "
            "external_id for this subject, or resend the original request's identifiers to get it back."
        )


# One payload's outcome: (request, created), or why it was refused.
IntakeResult = tuple[AnyRequest, bool] | ExternalIdTaken


class IntakePlan:
    """New requests worked out for a list of payloads, before anything is stored: a row (and
    subject keys) for each payload except repeats of an external_id earlier in the list.
    Payloads can be added in parts, in order (a batch is stored chunk by chunk)."""

    def __init__(self, principal: Principal, payloads: list[ErasureRequestCreate] | None = None):
        self.principal = principal
        self.payloads: list[ErasureRequestCreate] = []
        self.first_use: dict[str, int] = {}
        self.rows: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}
        # Subject keys of the repeats of an external_id (compared with its first use's).
        self.repeat_keys: dict[int, dict[str, str]] = {}
        if payloads:
            self.add(payloads)

    def add(self, payloads: list[ErasureRequestCreate]) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """Append payloads; returns the new rows among them."""
        new = []
        for payload in payloads:
            index = len(self.payloads)
            self.payloads.append(payload)
            if payload.external_id is not None:
                if payload.external_id in self.first_use:
                    self.repeat_keys[index] = subject_keys(payload.subject.identifiers)
                    continue
                self.first_use[payload.external_id] = index
            self.rows[index] = new_row(self.principal, payload)
            new.append(self.rows[index])
        return new

    def repeat_conflicts(self, index: int) -> bool:
        """Whether repeat `index` names another subject than the first use of its external_id."""
        first = self.first_use[self.payloads[index].external_id]
        return self.repeat_keys[index] != self.rows[first][1]

    @property
    def ids(self) -> set[uuid.UUID]:
        return {row["id"] for row, _keys in self.rows.values()}

    def taken(self, inserted: set[uuid.UUID]) -> list[str]:
        """External ids of the rows not inserted: another request holds them."""
        return [row["external_id"] for row, _keys in self.rows.values() if row["id"] not in inserted]

    def results(
        self, inserted: set[uuid.UUID], stored: dict[str, ErasureRequest], session: Session | None = None,
    ) -> list[IntakeResult]:
        """The outcome per payload once `inserted` are stored; `stored` holds the requests that
        own the taken external ids. A taken external_id answers with its request when the subject
        keys are the same, and ExternalIdTaken when they differ. With a session, the policy
        approves verified requests."""
        results: list[IntakeResult | None] = [None] * len(self.payloads)
        # external_id → (its request, that request's subject keys)
        owners: dict[str, tuple[AnyRequest, dict[str, str]]] = {}
        auto_approve = session is not None and get_settings().auto_approve_verified
        for index, (row, keys) in self.rows.items():
            if row["id"] not in inserted:
                owner = stored.get(row["external_id"])
                if owner is None:
                    raise Conflict("Another request with this external_id is being stored; retry shortly.",
                                   headers={"Retry-After": "1"})
                owner_keys = {subject.kind: subject.subject_key for subject in owner.subjects}
                owners[row["external_id"]] = (owner, owner_keys)
                results[index] = (owner, False) if owner_keys == keys else ExternalIdTaken()
                continue
            if auto_approve and row["identity_verified"]:
                request = intake.attach(session, row)
                _move(session, request, "approve", "approved", AUTO_APPROVER, None, {})
            else:
                request = intake.StoredRequest(**row)
            results[index] = (request, True)
            if row["external_id"] is not None:
                owners[row["external_id"]] = (request, keys)
        for index, keys in self.repeat_keys.items():
            owner, owner_keys = owners[self.payloads[index].external_id]
            results[index] = (owner, False) if owner_keys == keys else ExternalIdTaken()
        return results  # type: ignore[return-value]

    def count_created(self, inserted: set[uuid.UUID]) -> None:
        counts = Counter((row["source"], row["jurisdiction"]) for row, _keys in self.rows.values() if row["id"] in inserted)
        for (source, jurisdiction), count in counts.items():
            metrics.REQUESTS_CREATED.labels(source=source, jurisdiction=jurisdiction).inc(count)


def create_many(
    session: Session, principal: Principal, payloads: list[ErasureRequestCreate],
) -> list[IntakeResult]:
    """The outcome for each payload, in order, as if each were created in turn: an external_id
    already stored, or repeated within `payloads`, yields the request that holds it (or
    ExternalIdTaken if that request is for another subject).
    Each new request gets its subjects and the first event of its audit chain."""
    plan = IntakePlan(principal, payloads)
    rows = plan.rows
    if is_postgres(session):
        inserted = intake.store_postgres(session, principal, list(rows.values()))
    else:
        inserted = intake.insert_requests(session, [row for row, _keys in rows.values()])
        intake.insert_subjects(session, [
            {"request_id": row["id"], "kind": kind, "subject_key": key}
            for row, keys in rows.values() if row["id"] in inserted for kind, key in keys.items()
        ])
        audit_service.start_chains(session, [
            intake.received_event(principal, row, keys) for row, keys in rows.values() if row["id"] in inserted
        ])
    results = plan.results(inserted, find_taken(session, plan, inserted), session)
    plan.count_created(inserted)
    return results


def find_taken(session: Session, plan: IntakePlan, inserted: set[uuid.UUID]) -> dict[str, ErasureRequest]:
    """The stored requests that hold the external ids `plan` could not insert. Inserting waited
    for any racing intake of these ids to commit, so their rows are visible now."""
    taken = plan.taken(inserted)
    return _find_many_by_external_id(session, plan.principal.client, taken) if taken else {}


def new_row(principal: Principal, payload: ErasureRequestCreate) -> tuple[dict[str, Any], dict[str, str]]:
    """Every column of a new request (so that it can be attached without reading it back), and
    its subject keys by identifier kind."""
    identifiers = payload.subject.identifiers
    keys = subject_keys(identifiers)
    now = utcnow()
    verification = payload.verification
    row = {
        "id": uuid.uuid4(), "client": principal.client, "external_id": payload.external_id,
        "jurisdiction": payload.jurisdiction, "source": payload.source, "status": "received", "held_from": None,
        "identity_verified": verification.status == "verified", "verification_status": verification.status,
        "verification_method": verification.method,
        "verification_at": None if verification.status == "unverified" else (verification.at or now),
        "reason": redact(payload.reason, identifiers),
        "status_reason": None, "callback_url": str(payload.callback_url) if payload.callback_url else None,
        "subject_digest": subject_digest(keys), "received_at": now,
        "due_at": lifecycle.due_at(payload.jurisdiction, now), "extended_days": None, "decided_at": None,
        "completed_at": None, "outcome": None, "updated_at": now, "progress": None,
    }
    return row, keys


def _find_many_by_external_id(session: Session, client: str, external_ids: list[str]) -> dict[str, ErasureRequest]:
    found: dict[str, ErasureRequest] = {}
    for start in range(0, len(external_ids), 500):
        chunk = external_ids[start:start + 500]
        found.update((r.external_id, r) for r in session.scalars(
            select(ErasureRequest).where(ErasureRequest.client == client, ErasureRequest.external_id.in_(chunk))
        ))
    return found


def get_for(session: Session, principal: Principal, request_id: uuid.UUID, *, lock: bool = False) -> ErasureRequest:
    """The request, if the caller may see it; another client's id answers 404 like a missing one."""
    query = select(ErasureRequest).where(ErasureRequest.id == request_id)
    if not principal.is_admin:
        query = query.where(ErasureRequest.client == principal.client)
    if lock:
        query = query.with_for_update()
    request = session.scalar(query)
    if request is None:
        raise NotFound("No erasure request with this id.")
    return request


def _move(session, request, action, to_status, actor, reason, extra) -> None:
    from_status = request.status
    now = utcnow()
    request.status = to_status
    request.updated_at = now
    if action in ("approve", "deny"):
        request.decided_at = now
    if action == "hold":
        # A scheduled request leaves its batch when held; released, it is planned again.
        request.held_from = "approved" if from_status == "scheduled" else from_status
    if action == "release":
        request.held_from = None
    if to_status in lifecycle.TERMINAL:
        request.completed_at = now
    if reason is not None:
        request.status_reason = reason
    if to_status == "completed":
        erasure_log.record_after_commit(session, erasure_log.ErasureEntry(
            request.id, request.client, request.jurisdiction, now, request.outcome,
            tuple((s.kind, s.subject_key) for s in request.subjects)))
    webhook_service.notify(session, request, f"request.{EVENT_NAMES[action]}")
    audit_service.append(
        session, audit_service.request_stream(request.id), f"request.{EVENT_NAMES[action]}", actor, {"from": from_status, "to": to_status, "reason": reason, **extra},
    )
    session.flush()


def move(session: Session, request: ErasureRequest, action: str, actor: str, *, reason: str | None = None, **extra) -> None:
    """A service's move (approve, review, schedule, process, verify, complete, fail): status, audit
    event and webhook in the caller's transaction."""
    targets = {"approve": "approved", "review": "needs_review", "schedule": "scheduled", "process": "processing",
               "verify": "verifying", "complete": "completed", "fail": "failed"}
    _move(session, request, action, targets[action], actor, reason, extra)


def _refuse_subject_in(request: ErasureRequest, reason: str | None) -> None:
    """A reason given after intake goes into the append-only chain for good: it must not hold
    the request's own subject in any disguise the generic detector (the schema's) misses."""
    if reason and names_subject(reason, {subject.kind: subject.subject_key for subject in request.subjects}):
        raise Unprocessable(REASON_REFUSED)


class UnverifiedApproval(Unprocessable):
    title, slug = "Requester not verified", "unverified-requester"


def review(
    session: Session, principal: Principal, request_id: uuid.UUID, action: str, reason: str | None, *,
    ground: str | None = None, override_reason: str | None = None,
) -> ErasureRequest:
    request = get_for(session, principal, request_id, lock=True)
    _refuse_subject_in(request, reason)
    _refuse_subject_in(request, override_reason)
    if override_reason and find_identifier(override_reason):
        raise Unprocessable("override_reason must not contain personal identifiers (an e-mail address or phone number).")
    regime = regimes.regime(request.jurisdiction)
    if ground is not None and ground not in regime.deny_grounds:
        raise Unprocessable(f"{regime.name} allows denying on these grounds only: {', '.join(sorted(regime.deny_grounds))}.",
                            allowed_grounds=sorted(regime.deny_grounds))
    allowed_from, to_status = lifecycle.REVIEW_ACTIONS[action]
    if request.status not in allowed_from:
        raise InvalidTransition(
            f"Cannot {action} a request whose status is '{request.status}'.",
            current_status=request.status, allowed_from=sorted(allowed_from),
        )
    extra: dict[str, Any] = {} if ground is None else {"ground": ground}
    if action == "approve" and request.verification_status != "verified":
        # Approving a requester nobody verified is a decision someone must own, in the trail.
        if override_reason is None:
            raise UnverifiedApproval(
                f"The requester's identity is {request.verification_status}: approving this request needs an "
                "override_reason (audited), or verify the identity first.",
                verification_status=request.verification_status)
        extra.update(override_reason=override_reason, identity_verification=request.verification_status)
    target = to_status or request.held_from or "received"
    _move(session, request, action, target, principal.actor, reason, extra)
    return request


def set_verification(session: Session, principal: Principal, request_id: uuid.UUID, given: IdentityVerification) -> ErasureRequest:
    """Record the requester's verification after intake (audited as `request.identity_verification`).
    A request that becomes verified while received is approved by the auto-approve policy, when on."""
    request = get_for(session, principal, request_id, lock=True)
    if request.status in lifecycle.TERMINAL:
        raise InvalidTransition(f"Cannot change the verification of a request whose status is '{request.status}'.",
                                current_status=request.status)
    now = utcnow()
    at = None if given.status == "unverified" else (given.at or now)
    before = request.verification_status
    request.verification_status, request.verification_method, request.verification_at = given.status, given.method, at
    request.identity_verified = given.status == "verified"
    request.updated_at = now
    audit_service.append(session, audit_service.request_stream(request.id), "request.identity_verification",
                         principal.actor, {"from": before, "to": given.status, "method": given.method,
                                           "at": None if at is None else at.isoformat()})
    if given.status == "verified" and request.status == "received" and get_settings().auto_approve_verified:
        _move(session, request, "approve", "approved", AUTO_APPROVER, None, {})
    session.flush()
    return request


UNVERIFIED_DENIER = "policy:unverified-deny-after-days"


def deny_unverified(session: Session, now: datetime | None = None, limit: int = 200) -> int:
    """Deny the open requests whose requester is still not verified `unverified_deny_after_days`
    after receipt, on the ground `identity_unverified` with their regime's reason. Off when the
    setting is unset."""
    days = get_settings().unverified_deny_after_days
    if days is None:
        return 0
    now = now or utcnow()
    allowed_from, _to = lifecycle.REVIEW_ACTIONS["deny"]
    requests = list(session.scalars(
        select(ErasureRequest).where(
            ErasureRequest.status.in_(sorted(allowed_from)), ErasureRequest.verification_status != "verified",
            ErasureRequest.received_at < now - timedelta(days=days),
        ).order_by(ErasureRequest.received_at).limit(limit).with_for_update(skip_locked=True)
    ))
    for request in requests:
        regime = regimes.regime(request.jurisdiction)
        reason = (f"The requester's identity was not verified within {days} days of receipt; {regime.name} "
                  f"({regime.basis}) allows refusing a request whose requester cannot be identified.")
        _move(session, request, "deny", "denied", UNVERIFIED_DENIER, reason,
              {"ground": regimes.IDENTITY_UNVERIFIED, "identity_verification": request.verification_status})
    return len(requests)


def extend(session: Session, principal: Principal, request_id: uuid.UUID, days: int, reason: str) -> ErasureRequest:
    request = get_for(session, principal, request_id, lock=True)
    _refuse_subject_in(request, reason)
    if request.status not in lifecycle.EXTENDABLE:
        raise InvalidTransition(
            f"Cannot extend a request whose status is '{request.status}'.",
            current_status=request.status, allowed_from=sorted(lifecycle.EXTENDABLE),
        )
    regime = regimes.regime(request.jurisdiction)
    if regime.extension_days is None:
        raise Unprocessable(f"{regime.name} ({regime.basis}) allows no extension of the deadline.")
    if request.extended_days is not None:
        raise InvalidTransition(
            f"The deadline of this request was already extended once; {regime.name} allows one extension.",
            current_status=request.status,
        )
    if days > regime.extension_days:
        raise Unprocessable(f"{regime.name} ({regime.basis}) allows extending by at most {regime.extension_days} days.",
                            max_days=regime.extension_days)
    old_due = request.due_at
    request.due_at = old_due + timedelta(days=days)
    request.extended_days = days
    request.updated_at = utcnow()
    audit_service.append(
        session, audit_service.request_stream(request.id), "request.extended", principal.actor,
        {"days": days, "reason": reason, "from_due_at": old_due.isoformat(), "to_due_at": request.due_at.isoformat()},
    )
    session.flush()
    return request




def list_for(
    session: Session, principal: Principal, *, status=None, source=None, jurisdiction=None, external_id=None,
    overdue=None, created_after=None, created_before=None, limit=50, cursor=None,
) -> tuple[list[ErasureRequest], str | None]:
    query = select(ErasureRequest)
    if not principal.is_admin:
        query = query.where(ErasureRequest.client == principal.client)
    for column, value in ((ErasureRequest.status, status), (ErasureRequest.source, source),
                          (ErasureRequest.jurisdiction, jurisdiction), (ErasureRequest.external_id, external_id)):
        if value is not None:
            query = query.where(column == value)
    now = utcnow()
    if overdue is True:
        query = query.where(ErasureRequest.due_at < now, ErasureRequest.status.not_in(lifecycle.TERMINAL))
    elif overdue is False:
        query = query.where(or_(ErasureRequest.due_at >= now, ErasureRequest.status.in_(lifecycle.TERMINAL)))
    for bound in (created_after, created_before):
        if bound is not None and bound.tzinfo is None:
            raise Unprocessable("created_after and created_before need a timezone (e.g. 2026-01-01T00:00:00Z).")
    if created_after is not None:
        query = query.where(ErasureRequest.received_at >= created_after)
    if created_before is not None:
        query = query.where(ErasureRequest.received_at < created_before)
    if cursor:
        at, rid = decode_cursor(cursor)
        query = query.where(
            or_(ErasureRequest.received_at < at, and_(ErasureRequest.received_at == at, ErasureRequest.id < rid))
        )
    rows = list(session.scalars(query.order_by(ErasureRequest.received_at.desc(), ErasureRequest.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].received_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
