"""The rows of the training job (workers/training.py): what it trains, and recording what it
trained in one fenced unit of work. Functions here only flush; the worker's `session_scope()`
commits, so the database learns of the new version only once every artifact is stored."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.datasets import service as dataset_service
from app.jobs import service as job_service
from app.models import reference_pool, rehearsal_results
from app.models import service as model_service
from app.training.types import TrainedModel, TrainingPlan
from app.unlearning.method_choice import reference_pool_size
from app.unlearning.types import JobAttempt, Sisa


def start(session: Session, attempt: JobAttempt) -> TrainingPlan:
    job = job_service.get(session, attempt.job_id)
    model = model_service.get_model(session, job_service.model_of(job))
    dataset = dataset_service.get_dataset(session, model.dataset_id)
    dataset_version = dataset_service.get_version(session, uuid.UUID(job.payload["dataset_version_id"]))
    return TrainingPlan(
        model_id=model.id, family=model.family, params=model.params, seed=model.seed, sisa=Sisa.from_json(model.sisa),
        holdout_fraction=model.holdout_fraction, features=tuple(dataset.feature_columns), classes=len(dataset.classes),
        dataset_version_id=dataset_version.id, dataset_sha=dataset_version.sha256, text=dataset.is_text,
        reference_pool=reference_pool_size(model, dataset_version.rows),
    )


def record_trained(session: Session, attempt: JobAttempt, plan: TrainingPlan, trained: TrainedModel) -> None:
    """The references, the new version (made current) and, for a model with references (its
    unlearning method is approximate), its rehearsal job (workers/rehearsal.py); then the job's result."""
    reference_pool.record_trained(session, model_id=plan.model_id, pool_size=plan.reference_pool,
                                  membership_seed=plan.seed, dataset_version_id=plan.dataset_version_id,
                                  trained=trained.references)
    version = model_service.record_version(
        session, model_id=plan.model_id, dataset_version_id=plan.dataset_version_id, family=plan.family,
        params=dict(trained.params), seed=plan.seed, shape=trained.shape.to_json(),
        sisa=None if plan.sisa is None else plan.sisa.to_json(), manifest_sha=trained.manifest_sha,
        shards=[s.to_json() for s in trained.shards], metrics=dict(trained.metrics),
        origin={"kind": "training", "job_id": str(attempt.job_id)},
    )
    rehearsal = (rehearsal_results.schedule(session, model_service.get_model(session, plan.model_id))
                 if plan.reference_pool else None)
    job_service.complete(session, attempt.job_id, attempt.attempt, {
        "model_version": version.version, "sha256": version.sha256, "metrics": dict(trained.metrics),
        "references": {"pool_size": plan.reference_pool, "trained": sorted(trained.references)},
        "rehearsal_job_id": str(rehearsal.id) if rehearsal is not None else None,
    })
