from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from app.deps import SessionDep, any_scope
from app.jobs import service
from app.jobs.schemas import JobOut
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)


@router.get("/{job_id}", response_model=JobOut, operation_id="get_job", summary="Get a job")
def get_job(job_id: uuid.UUID, session: SessionDep, principal: any_scope("models:read", "requests:read")) -> Any:
    return JobOut.model_validate(service.get_for(session, principal, job_id), from_attributes=True)
