from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse

from app.audit import checkpoints
from app.audit.models import AuditCheckpoint
from app.deps import SessionDep, scoped
from app.errors import Conflict, NotFound
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=UnitOfWorkRoute)
NOTE = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}


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
