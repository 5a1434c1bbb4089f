from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.audit import service
from app.deps import SessionDep, scoped
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=UnitOfWorkRoute)


class BrokenChain(BaseModel):
    stream: str
    seq: int | None
    problem: str | None


class VerifyReport(BaseModel):
    valid: bool
    chains: int
    events: int
    broken: list[BrokenChain]
    first_broken: BrokenChain | None


@router.get("/verify", response_model=VerifyReport, operation_id="verify_audit_chains", summary="Verify every audit chain")
def verify_all(session: SessionDep, _principal: scoped("admin")) -> Any:
    return build_report(session)


def build_report(session) -> VerifyReport:
    chains = events = 0
    broken: list[BrokenChain] = []
    for stream, result in service.verify_all(session):
        chains += 1
        events += result.length
        if not result.valid:
            broken.append(BrokenChain(stream=stream, seq=result.broken_at_seq, problem=result.problem))
    return VerifyReport(valid=not broken, chains=chains, events=events, broken=broken[:100], first_broken=broken[0] if broken else None)
