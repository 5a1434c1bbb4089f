"""The rows of the rehearsal job (workers/rehearsal.py): what it rehearses, and recording what it
found. The rehearsal erases in memory only: it reads the model's current version like an
unlearning job (`service.version_snapshot`, towards the same dataset version) and never writes a
model version, a dataset version or an artifact; its one row is `model_rehearsals`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import get_settings
from app.datasets import service as dataset_service
from app.families.registry import get_family
from app.jobs import service as job_service
from app.models import rehearsal_results as rehearsal_service
from app.models import service as model_service
from app.unlearning import method_choice, service
from app.unlearning.types import JobAttempt, MethodSettings, ModelSnapshot


@dataclass(frozen=True)
class RehearsalTarget:
    """The version to rehearse, the methods to try on it, how many subjects each draw erases, how
    many draws and how many retrain seeds per draw."""

    snapshot: ModelSnapshot
    dataset_version_id: uuid.UUID
    methods: tuple[str, ...]
    subjects: int
    draws: int
    retrain_seeds: int


def target(session: Session, attempt: JobAttempt) -> RehearsalTarget | None:
    """None when there is nothing to rehearse: no version, or an exact method (no references)."""
    job = job_service.get(session, attempt.job_id)
    if job.model_id is None:
        return None
    model = model_service.get_model(session, job.model_id)
    if model.current_version is None:
        return None
    version = model_service.current_version(session, model)
    dataset_version = dataset_service.get_version(session, version.dataset_version_id)
    method = method_choice.choose_method(model, dataset_version.rows)
    if method_choice.reference_pool_size(model, dataset_version.rows) == 0:
        return None
    snapshot = service.version_snapshot(session, model, dataset_version, MethodSettings(method), holds=True)
    return RehearsalTarget(snapshot=snapshot, dataset_version_id=dataset_version.id,
                           methods=method_choice.approximate_methods(get_family(model.family)),
                           subjects=get_settings().rehearsal_subjects, draws=get_settings().rehearsal_draws,
                           retrain_seeds=get_settings().rehearsal_retrain_seeds)


def record(session: Session, attempt: JobAttempt, rehearsed: RehearsalTarget, *, subjects: int, forget_records: int,
           retrain_cpu_s: float, results: Sequence[Mapping[str, Any]], design: Mapping[str, Any]) -> None:
    """Store the rehearsal and complete its job with a summary: the candidates, how many passed,
    the choice, and the design (draws, retrain seeds, the retrains' spread)."""
    row = rehearsal_service.record(
        session, model_id=rehearsed.snapshot.model_id, model_version=rehearsed.snapshot.version_before,
        dataset_version_id=rehearsed.dataset_version_id, subjects=subjects, forget_records=forget_records,
        retrain_cpu_s=retrain_cpu_s, results=results)
    job_service.complete(session, attempt.job_id, attempt.attempt, {
        "rehearsal_id": str(row.id), "model_version": row.model_version, "candidates": len(results),
        "passed": sum(1 for r in results if r.get("passed")), "chosen": row.chosen, **design,
    })


def skip(session: Session, attempt: JobAttempt, note: str) -> None:
    job_service.complete(session, attempt.job_id, attempt.attempt, {"note": note})
