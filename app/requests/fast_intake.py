"""Intake's fast path on PostgreSQL: new requests stored on the event loop (app/asyncdb.py).

A request is stored by one self-contained statement (see intake.py), atomic on its own, so it
needs no session and no transaction around it: the statement is awaited on an autocommit
connection, without a thread hop. Under an Idempotency-Key the same statement also records the
key with its answer. A batch goes in chunks within one
transaction (all new requests or none): while PostgreSQL stores one chunk, a thread validates,
hashes and renders the next, so the server's and the database's CPU overlap. The answer is
rendered as if every new request were inserted, the usual case; when an external_id turns out
to be taken, its owner is read and the answer rendered again.

Each function returns None where the fast path does not apply and the caller uses the unit of
work: another database; a request the auto-approve policy would approve (the approval is a
second change that must commit with it); a single request whose external_id or Idempotency-Key
is taken; a batch under an Idempotency-Key.
"""

from __future__ import annotations

import asyncio

import psycopg
from collections import Counter
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app import asyncdb, metrics
from app.config import get_settings
from app.deps import UnitOfWork, in_intake_thread
from app.errors import problem_body, sanitised_validation_errors
from app.idempotency import service as idempotency_service
from app.identities import service as identity_service
from app.keys.service import Principal
from app.requests import intake, service
from app.requests.schemas import ErasureRequestCreate

# Items per statement of a batch: small enough that the first chunk (which nothing overlaps)
# is short, large enough that a statement's fixed cost stays small.
BATCH_CHUNK = 250


# The Idempotency-Key scope of a single create, shared with the unit-of-work path (router.py).
CREATE_ROUTE = "create-request"


def location_of(request_id) -> dict[str, str]:
    return {"Location": f"/v1/erasure-requests/{request_id}"}


async def create_one(principal: Principal, payload: ErasureRequestCreate, idempotency_key: str | None) -> JSONResponse | None:
    """Store one new request and answer 201; None where the fast path does not apply (see the
    module). Under an Idempotency-Key the request is stored only if the key is unused, together
    with the key's answer; a key already used (a replay, a reuse with another body, a concurrent
    duplicate) is left to the unit of work, which replays, refuses or waits as for any key."""
    connections = await asyncdb.pool()
    if connections is None or (payload.verification.status == "verified" and get_settings().auto_approve_verified):
        return None
    row, keys = service.new_row(principal, payload)
    stored = intake.StoredRequest(**row)
    body = service.to_out(stored).model_dump(mode="json")
    location = location_of(row["id"])
    if idempotency_key is None:
        statement, params = intake.postgres_statement(principal, [(row, keys)])
    else:
        scoped = idempotency_service.scoped_key(CREATE_ROUTE, idempotency_key)
        fingerprint = idempotency_service.fingerprint(payload.model_dump(mode="json"))
        statement, params = intake.postgres_statement_keyed(principal, row, keys, scoped, fingerprint, (201, body, location))
    async with asyncdb.connection(connections) as live:
        try:
            inserted = await asyncdb.fetch_ids(live, statement, params)
        except psycopg.errors.UniqueViolation:
            return None  # the key was taken by a concurrent request meanwhile: nothing was stored
    if not inserted:
        return None  # the key or the external_id is taken: the unit of work answers
    metrics.REQUESTS_CREATED.labels(source=row["source"], jurisdiction=row["jurisdiction"]).inc()
    return JSONResponse(body, status_code=201, headers=location)


def check_item(index: int, raw: Any, known: frozenset[str]) -> ErasureRequestCreate | dict[str, Any]:
    """The item as a payload, or its error result (also for an identifier kind not in `known`)."""
    try:
        payload = ErasureRequestCreate.model_validate(raw)
    except ValidationError as exc:
        errors = sanitised_validation_errors(exc.errors(include_input=False, include_url=False))
        problem = problem_body(422, "Validation failed", "This item is not a valid erasure request.", "validation", errors=errors)
        return {"index": index, "result": "error", "status": 422, "problem": problem}
    unknown = identity_service.unknown_problem(payload.subject.identifiers, known)
    if unknown is not None:
        problem = problem_body(unknown.status, unknown.title, unknown.detail, unknown.slug, **unknown.extra)
        return {"index": index, "result": "error", "status": unknown.status, "problem": problem}
    return payload


def batch_body(items: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(item["result"] for item in items)
    return {"items": items, "created": counts["created"], "existing": counts["existing"], "errors": counts["error"]}


def outcome_item(index: int, outcome: service.IntakeResult) -> dict[str, Any]:
    """A batch item's result: its request, or the problem of an external_id used for another subject."""
    if isinstance(outcome, service.ExternalIdTaken):
        problem = problem_body(outcome.status, outcome.title, outcome.detail, outcome.slug)
        return {"index": index, "result": "error", "status": outcome.status, "problem": problem}
    return result_item(index, *outcome)


def result_item(index: int, request: service.AnyRequest, created: bool) -> dict[str, Any]:
    return {
        "index": index, "result": "created" if created else "existing", "status": 201 if created else 200,
        "request": service.to_out(request).model_dump(mode="json"),
    }


class _Batch:
    """A batch being stored: its plan, and each item's result as rendered so far."""

    def __init__(self, principal: Principal, items: list[Any], known: frozenset[str]):
        self.principal, self.raw, self.known = principal, items, known
        self.plan = service.IntakePlan(principal)
        self.rendered: list[dict[str, Any]] = []
        self.positions: list[tuple[int, int]] = []  # (item index, payload index) of valid items
        self.shown: dict[int, dict[str, Any]] = {}  # payload index → its new request, rendered

    def prepare(self, start: int) -> tuple[str, dict[str, Any]] | None:
        """Validate, hash and render items [start, start + BATCH_CHUNK); the statement that
        stores their new requests, if any."""
        payloads = []
        for index in range(start, min(start + BATCH_CHUNK, len(self.raw))):
            checked = check_item(index, self.raw[index], self.known)
            if isinstance(checked, dict):
                self.rendered.append(checked)
                continue
            self.positions.append((index, len(self.plan.payloads) + len(payloads)))
            payloads.append(checked)
            self.rendered.append({})
        first = len(self.plan.payloads)
        rows = self.plan.add(payloads)
        for index, payload_index in self.positions:
            if payload_index < first:
                continue
            found = self.plan.rows.get(payload_index)
            if found is not None:
                item = result_item(index, intake.StoredRequest(**found[0]), True)
                self.shown[payload_index] = item["request"]
            elif self.plan.repeat_conflicts(payload_index):
                item = outcome_item(index, service.ExternalIdTaken())
            else:  # a repeated external_id: the request of its first use
                owner = self.plan.first_use[self.plan.payloads[payload_index].external_id]
                item = {"index": index, "result": "existing", "status": 200, "request": self.shown[owner]}
            self.rendered[index] = item
        return intake.postgres_statement(self.principal, rows) if rows else None

    def answer(self, inserted: set, session=None) -> JSONResponse:
        if inserted == self.plan.ids:
            return JSONResponse(batch_body(self.rendered))
        # Some external ids are taken: their owners answer, read in the unit of work's session.
        results = self.plan.results(inserted, service.find_taken(session, self.plan, inserted))
        items = list(self.rendered)
        for (index, _payload_index), outcome in zip(self.positions, results):
            items[index] = outcome_item(index, outcome)
        return JSONResponse(batch_body(items))


async def create_batch(principal: Principal, items: list[Any], known: frozenset[str]) -> JSONResponse | None:
    """Store a batch (its items may name the `known` identifier kinds); None where the fast
    path does not apply (see the module)."""
    connections = await asyncdb.pool()
    if connections is None:
        return None
    if get_settings().auto_approve_verified and any(
        not isinstance(item, dict) or item.get("identity_verified") not in (None, False)
        or item.get("identity_verification") is not None for item in items
    ):
        return None
    batch = _Batch(principal, items, known)
    inserted: set = set()
    async with asyncdb.connection(connections) as live:
        async with live.transaction():
            storing = None
            for start in range(0, max(len(items), 1), BATCH_CHUNK):
                preparing = in_intake_thread(lambda start=start: batch.prepare(start))
                statement, ids = await _both(preparing, storing)
                inserted.update(ids or ())
                storing = asyncdb.fetch_ids(live, *statement) if statement is not None else None
            ids = await storing if storing is not None else None
            inserted.update(ids or ())
    batch.plan.count_created(inserted)
    if inserted == batch.plan.ids:
        return await in_intake_thread(lambda: batch.answer(inserted))
    unit = UnitOfWork()
    return await unit.run(lambda: batch.answer(inserted, unit.session))


async def _both(preparing, storing):
    """Await the next chunk's preparation and the previous chunk's statement together; if either
    fails, the other is still awaited before the error leaves (the transaction then rolls back
    with nothing in flight)."""
    if storing is None:
        return await preparing, None
    outcomes = await asyncio.gather(preparing, storing, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes
