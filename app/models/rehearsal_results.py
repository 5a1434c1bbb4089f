"""Unlearning rehearsals of a model (workers/rehearsal.py): scheduling the low-priority job after
training, recording what it found, and reading it back for the jobs that use it
(app/unlearning/method_choice.py) and for `GET /v1/models/{name}/rehearsal`.

A rehearsal row holds counts and figures only. Each entry of `results` is one candidate, a
method with settings (overrides of the method's defaults, validated by the worker), judged on
every draw of subjects:

    {"method", "settings", "verdict", "reasons", "gaps": {"forget_accuracy", "holdout_accuracy",
     "mia_auc"}, "cost", "cpu_s", "pass_rate", "draws": [{"verdict", "passed", "gaps"}], "passed"}

`gaps` are the mean |gap| to the retrains over the draws, `cost` the mean per draw. `chosen` is
the passing candidate with the highest pass rate across draws, the cheapest among equals
(`best`); rows written before the draws existed count a pass as a rate of 1. `subjects` is the
size of one draw, `forget_records` the records of all draws. Functions here only flush."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import utcnow
from app.errors import NotFound
from app.jobs import service as job_service
from app.jobs.models import Job
from app.models import service as model_service
from app.models.models import Model, ModelRehearsal

KIND = "rehearsal"


def schedule(session: Session, model: Model) -> Job | None:
    """The rehearsal job of a freshly trained model, when OBLIVIATE_REHEARSAL is on: it waits
    `rehearsal_delay_seconds` (erasures and training go first), and one queued per model is enough."""
    settings = get_settings()
    if not settings.rehearsal:
        return None
    pending = session.scalar(select(Job.id).where(Job.model_id == model.id, Job.kind == KIND,
                                                  Job.status.in_(job_service.ACTIVE)))
    if pending is not None or not model_service.within_budget(session, model):
        return None
    delay = settings.rehearsal_delay_seconds
    return job_service.create(session, client=model.client, kind=KIND, model_id=model.id, payload={},
                              not_before=utcnow() + timedelta(seconds=delay) if delay > 0 else None)


def record(session: Session, *, model_id: uuid.UUID, model_version: int, dataset_version_id: uuid.UUID,
           subjects: int, forget_records: int, retrain_cpu_s: float, results: Sequence[Mapping[str, Any]]) -> ModelRehearsal:
    chosen = best(results)
    rehearsal = ModelRehearsal(
        id=uuid.uuid4(), model_id=model_id, model_version=model_version, dataset_version_id=dataset_version_id,
        created_at=utcnow(), subjects=subjects, forget_records=forget_records, retrain_cpu_s=retrain_cpu_s,
        results=[dict(r) for r in results],
        chosen=None if chosen is None else {"method": chosen["method"], "settings": dict(chosen["settings"])},
    )
    session.add(rehearsal)
    session.flush()
    return rehearsal


def pass_rate(result: Mapping[str, Any]) -> float:
    rate = result.get("pass_rate")
    return float(rate) if isinstance(rate, int | float) else 1.0 if result.get("passed") else 0.0


def best(results: Iterable[Mapping[str, Any]], method: str | None = None) -> Mapping[str, Any] | None:
    """The passing candidate (of `method`, or of any) with the highest pass rate across draws,
    the cheapest among equals; None when none passed. Cost never outranks the pass rate: a
    cheap candidate that passed fewer draws is not chosen over one that passed more."""
    passing = [r for r in results if r.get("passed") and (method is None or r.get("method") == method)]
    return min(passing, key=lambda r: (-pass_rate(r), float(r.get("cost") or 0.0)), default=None)


def latest(session: Session, model_id: uuid.UUID) -> ModelRehearsal | None:
    return session.scalar(select(ModelRehearsal).where(ModelRehearsal.model_id == model_id)
                          .order_by(ModelRehearsal.created_at.desc(), ModelRehearsal.id).limit(1))


def of_family(session: Session, client: str, family: str) -> list[ModelRehearsal]:
    """Every rehearsal of the client's models of this family, newest first. Only the client's own:
    another client's results never steer this client's jobs."""
    return list(session.scalars(
        select(ModelRehearsal).join(Model, Model.id == ModelRehearsal.model_id)
        .where(Model.client == client, Model.family == family).order_by(ModelRehearsal.created_at.desc())))


def latest_of(session: Session, model: Model) -> ModelRehearsal:
    rehearsal = latest(session, model.id)
    if rehearsal is None:
        raise NotFound("This model has not been rehearsed (its unlearning method is exact, the rehearsal is off, "
                       "or its job has not run yet).")
    return rehearsal


def to_out(rehearsal: ModelRehearsal) -> dict[str, Any]:
    return {
        "id": rehearsal.id, "model_id": rehearsal.model_id, "model_version": rehearsal.model_version,
        "dataset_version_id": rehearsal.dataset_version_id, "created_at": rehearsal.created_at,
        "subjects": rehearsal.subjects, "forget_records": rehearsal.forget_records,
        "retrain_cpu_s": rehearsal.retrain_cpu_s, "results": rehearsal.results, "chosen": rehearsal.chosen,
        "draws": draws_of(rehearsal),
    }


def draws_of(rehearsal: ModelRehearsal) -> int:
    """How many draws of subjects the rehearsal judged its candidates on (1 before draws existed)."""
    return max((len(r.get("draws") or ()) for r in rehearsal.results or ()), default=0) or 1
