from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.schemas import Page

JobKind = Literal["training", "unlearning", "references", "rehearsal", "audit_verify"]
JobStatus = Literal["queued", "running", "completed", "failed"]


class JobOut(BaseModel):
    id: uuid.UUID
    kind: JobKind
    status: JobStatus
    model_id: uuid.UUID | None
    attempt: int
    max_attempts: int
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(Page):
    items: list[JobOut]
