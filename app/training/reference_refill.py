"""The rows of the `references` job (workers/references.py): which positions of a model's
reference pool to train, and recording them under the model's row lock. Functions here only flush.

Low priority: the job is created with a delay (`OBLIVIATE_REFERENCE_REFILL_DELAY_SECONDS`,
app/models/reference_pool.py) so the erasures of a window go first, and until it has run,
verification says which references are missing."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from app.datasets import service as dataset_service
from app.families.shape import Shape
from app.jobs import service as job_service
from app.models import reference_pool
from app.models import service as model_service
from app.training.types import RefillPlan
from app.unlearning import service as unlearning_service
from app.unlearning.method_choice import reference_pool_size
from app.unlearning.types import JobAttempt


def start(session: Session, attempt: JobAttempt) -> RefillPlan | None:
    """The positions to train on the model's current data; None, the job completed, when there are
    none (the model has no version, needs no references, or has them all)."""
    job = job_service.get(session, attempt.job_id)
    model = model_service.get_model(session, job_service.model_of(job))
    if not model.current_version:
        job_service.complete(session, attempt.job_id, attempt.attempt, {"note": "the model has no version"})
        return None
    version = model_service.current_version(session, model)
    dataset = dataset_service.get_dataset(session, model.dataset_id)
    dataset_version = dataset_service.get_version(session, version.dataset_version_id)
    size = reference_pool_size(model, dataset_version.rows)
    missing = reference_pool.missing_positions(session, model.id, size) if size else []
    if not missing:
        job_service.complete(session, attempt.job_id, attempt.attempt, {"trained": [], "pool_size": size})
        return None
    return RefillPlan(
        model_id=model.id, family=model.family, params=version.params, shape=Shape(**version.shape), seed=version.seed,
        manifest_sha=version.manifest_sha256, features=tuple(dataset.feature_columns),
        dataset_version_id=dataset_version.id, dataset_sha=dataset_version.sha256, text=dataset.is_text,
        pool_size=size, missing=tuple(missing),
    )


def record(session: Session, attempt: JobAttempt, plan: RefillPlan, trained: Mapping[int, str]) -> bool:
    """Record the trained references and complete the job. False when the model's data changed
    meanwhile: an erasure committed new data, so these references may hold its subjects; their
    bytes are then scheduled like destroyed ones, and the job must run again on the new data."""
    # Under the model's row lock, which promoting a new version also takes.
    model = model_service.get_model(session, plan.model_id, lock=True)
    if model_service.current_version(session, model).dataset_version_id != plan.dataset_version_id:
        unlearning_service.schedule_unreferenced(session, sorted(trained.values()))
        return False
    reference_pool.record_trained(session, model_id=plan.model_id, pool_size=plan.pool_size, membership_seed=plan.seed,
                                  dataset_version_id=plan.dataset_version_id, trained=trained)
    job_service.complete(session, attempt.job_id, attempt.attempt, {
        "trained": sorted(trained), "pool_size": plan.pool_size, "dataset_version_id": str(plan.dataset_version_id)})
    return True
