from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import SessionDep, scoped
from app.lineage import service
from app.lineage.schemas import LookupBody, LookupResult
from app.routing import UnitOfWorkRoute, reads_only

router = APIRouter(prefix="/v1/subjects", tags=["lineage"], route_class=UnitOfWorkRoute)

Reviewer = scoped("requests:review")


@router.post("/lookup", response_model=LookupResult, operation_id="lookup_subject", summary="Find where a subject's data is")
@reads_only
def lookup_subject(body: LookupBody, session: SessionDep, principal: Reviewer) -> Any:
    """Which of the caller's dataset versions and model versions hold this subject, and how many
    records. The answer names the subject only by the digest of its keys."""
    return service.lookup(session, principal, body.identifiers, include_slices=body.include_slices)
