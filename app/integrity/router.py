from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import SessionDep, scoped
from app.integrity.schemas import VerifyReport
from app.integrity.service import build_report
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=UnitOfWorkRoute)


@router.get("/verify", response_model=VerifyReport, operation_id="verify_audit_chains",
            summary="Verify every audit chain, the log against its checkpoints, and every certificate")
def verify_all(session: SessionDep, _principal: scoped("admin")) -> Any:
    return build_report(session)
