from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from app.audit import checkpoints, log, service
from app.audit.models import AuditCheckpoint
from app.deps import SessionDep, scoped
from app.errors import Conflict, NotFound
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=UnitOfWorkRoute)
NOTE = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}


class BrokenChain(BaseModel):
    stream: str
    seq: int | None
    problem: str | None


class LogSummary(BaseModel):
    valid: bool
    tree_size: int
    unsequenced: int
    checkpoints: int
    latest_checkpoint: int | None
    certificates: int
    unanchored_certificates: int
    problems: list[str]


class VerifyReport(BaseModel):
    valid: bool
    chains: int
    events: int
    broken: list[BrokenChain]
    first_broken: BrokenChain | None
    log: LogSummary


@router.get("/verify", response_model=VerifyReport, operation_id="verify_audit_chains",
            summary="Verify every audit chain, the log against its checkpoints, and every certificate")
def verify_all(session: SessionDep, _principal: scoped("admin")) -> Any:
    return build_report(session)


# 409: no checkpoint yet, as a certificate before completion.
@router.get("/checkpoints/latest", response_class=PlainTextResponse, responses={**NOTE, **problem_responses(409)},
            operation_id="get_latest_audit_checkpoint", summary="The newest signed checkpoint of the audit log")
def latest_checkpoint(session: SessionDep, _principal: scoped("audit:read")) -> PlainTextResponse:
    """The newest signed checkpoint of the audit log (a C2SP signed note): keep it, and later
    check the log against it with `obliviate audit verify --checkpoint FILE`."""
    row = checkpoints.latest(session)
    if row is None:
        raise Conflict("No checkpoint yet: the checkpointer signs one within a minute of the first event.")
    return PlainTextResponse(row.note)


# 404: no checkpoint of that size (checkpoints cover the log as it was at each run).
@router.get("/checkpoints/{tree_size}", response_class=PlainTextResponse, responses={**NOTE, **problem_responses(404)},
            operation_id="get_audit_checkpoint", summary="The signed checkpoint of a given tree size")
def checkpoint_of_size(
    tree_size: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep, _principal: scoped("audit:read"),
) -> PlainTextResponse:
    """A checkpoint signed earlier, by the number of events it covers."""
    row = session.get(AuditCheckpoint, tree_size)
    if row is None:
        raise NotFound(f"No checkpoint of tree size {tree_size}.")
    return PlainTextResponse(row.note)


def build_report(session, held: list[tuple[str, str]] | None = None) -> VerifyReport:
    """Every chain, and the log against every stored checkpoint, the copy published outside the
    database, any `held` (label, note) and every certificate."""
    chains = events = 0
    broken: list[BrokenChain] = []
    for stream, result in service.verify_all(session):
        chains += 1
        events += result.length
        if not result.valid:
            broken.append(BrokenChain(stream=stream, seq=result.broken_at_seq, problem=result.problem))
    outside = checkpoints.published_latest()
    held = ([("published checkpoint", outside)] if outside else []) + list(held or [])
    anchoring = log.verify_log(session, held)
    summary = LogSummary(valid=anchoring.valid, **{k: v for k, v in vars(anchoring).items()})
    return VerifyReport(
        valid=not broken and anchoring.valid, chains=chains, events=events, broken=broken[:100],
        first_broken=broken[0] if broken else None, log=summary,
    )
