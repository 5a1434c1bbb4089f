"""One unlearning or remediation job per dataset at a time.

Each job erases from the dataset's current version and promotes a model version trained on its
result. Two jobs of one dataset running side by side would both start from the same version, so
whichever finished last would bring back the subjects the other one erased (in the current
dataset version, and in the weights it promotes). A job whose dataset is busy is therefore not
claimed; it stays queued without spending an attempt and the sweeper sends it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.models import Dataset
from app.jobs.models import Job
from app.models.models import Model

# The jobs that make a new dataset version and promote model versions trained on it (a
# remediation names its dataset in its payload, docs/remediation.md).
KINDS = ("unlearning", "remediation")


def dataset_of(session: Session, model_id: uuid.UUID | None, payload: Mapping[str, Any] | None) -> uuid.UUID | None:
    if model_id is not None:
        return session.scalar(select(Model.dataset_id).where(Model.id == model_id))
    raw = (payload or {}).get("dataset_id")
    return uuid.UUID(raw) if raw else None


def blocked(session: Session, job_id: uuid.UUID) -> bool:
    """True while another unlearning or remediation job of this job's dataset is running.

    Runs in the claiming transaction and locks the dataset row first, so two workers claiming
    jobs of one dataset at the same moment take turns instead of both seeing it free. A running
    job whose worker died blocks until the sweeper re-queues it (its lease expired), which also
    fences that worker out, so it can no longer promote anything."""
    job = session.get(Job, job_id)
    if job is None or job.kind not in KINDS or job.status not in ("queued", "running"):
        return False
    dataset_id = dataset_of(session, job.model_id, job.payload)
    if dataset_id is None:
        return False
    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())
    others = session.execute(
        select(Job.model_id, Job.payload).where(Job.kind.in_(KINDS), Job.status == "running", Job.id != job.id)
    ).all()
    if any(dataset_of(session, model_id, payload) == dataset_id for model_id, payload in others):
        job.enqueued_at = None  # the sweeper's next pass sends it again
        return True
    return False
