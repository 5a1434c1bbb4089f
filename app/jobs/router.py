from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.deps import SessionDep, any_scope
from app.jobs import service
from app.jobs.schemas import JobKind, JobOut, JobPage, JobStatus
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)
Reader = any_scope("models:read", "requests:read")


@router.get("", response_model=JobPage, operation_id="list_jobs", summary="List jobs",
            responses=problem_responses(400))  # a cursor that is not one of ours
def list_jobs(
    session: SessionDep, principal: Reader, kind: JobKind | None = None, status: JobStatus | None = None,
    model_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    """This client's jobs, newest first (an admin key sees its own client's too)."""
    rows, next_cursor = service.list_for(session, principal, kind=kind, status=status, model_id=model_id,
                                         limit=limit, cursor=cursor)
    return JobPage(items=[JobOut.model_validate(job, from_attributes=True) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, operation_id="get_job", summary="Get a job")
def get_job(job_id: uuid.UUID, session: SessionDep, principal: Reader) -> Any:
    return JobOut.model_validate(service.get_for(session, principal, job_id), from_attributes=True)
