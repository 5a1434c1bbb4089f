"""Celery tasks. Each takes a row id and returns quietly if the row is gone or already done."""

from __future__ import annotations

from app import queue
from workers.celery_app import celery_app


@celery_app.task(name=queue.RUN_JOB)
def run_job(job_id: str) -> str:
    from workers import jobs

    return jobs.execute(job_id)


@celery_app.task(name="workers.tasks.sweep")
def sweep() -> int:
    """Re-enqueue jobs whose lease expired (their worker died) or whose message was lost."""
    from workers import jobs

    return jobs.sweep_expired()


@celery_app.task(name="workers.tasks.purge_artifacts")
def purge_artifacts() -> int:
    """Finish deletions of artifact bytes whose destruction committed but whose worker stopped
    before it deleted them (or rows that failed after storing new bytes)."""
    from workers import destruction

    return destruction.purge()


@celery_app.task(name="workers.tasks.plan")
def plan() -> int:
    """Turn approved requests into scheduled ones attached to unlearning jobs (batch windows);
    first deny those whose requester stayed unverified too long (OBLIVIATE_UNVERIFIED_DENY_AFTER_DAYS)."""
    from app.db import session_scope
    from app.requests import service as request_service
    from app.unlearning import planner

    with session_scope() as session:
        request_service.deny_unverified(session)
    with session_scope() as session:
        return planner.plan_approved(session)


@celery_app.task(name="workers.tasks.deliver_webhooks")
def deliver_webhooks() -> int:
    from workers import webhooks

    return webhooks.deliver_due()


@celery_app.task(name="workers.tasks.checkpoint")
def checkpoint() -> int:
    """Give committed audit events their log positions and sign a checkpoint over them."""
    from app.audit import checkpoints

    return checkpoints.run_quietly()


@celery_app.task(name=queue.PREDICT, ignore_result=False)
def predict(family: str, params: dict, shape: dict, weights: list[str], rows: list[list[float]]) -> dict:
    """Class probabilities for `rows` (plain lists, None for a value that is not finite), or the
    reason the weights cannot predict. Changes nothing, so its message carries its inputs."""
    from workers import inference

    return inference.answer(family, params, shape, weights, rows)


@celery_app.task(name=queue.GENERATE, ignore_result=False)
def generate(family: str, params: dict, shape: dict, weights: list[str], prompt: str, max_new_tokens: int,
             temperature: float, seed: int) -> dict:
    """{"text": continuation} of a language model's weights, or the reason they cannot generate."""
    from workers import inference

    return inference.answer_generate(family, params, shape, weights, prompt, max_new_tokens, temperature, seed)


@celery_app.task(name=queue.SCORE, ignore_result=False)
def score(family: str, params: dict, shape: dict, weights: list[str], texts: list[str]) -> dict:
    """{"scores": [{"log_likelihood", "tokens"}]} of each text, or the reason the weights cannot score."""
    from workers import inference

    return inference.answer_score(family, params, shape, weights, texts)


@celery_app.task(name=queue.SAMPLE, ignore_result=False)
def sample(family: str, params: dict, shape: dict, weights: list[str], n: int, seed: int, steps: int | None,
           label: int | None, shard_records: list[int | None] | None = None) -> dict:
    """{"images": [base64 PNG]} drawn from an image model's weights (SISA shards in proportion to
    `shard_records`; uniformly where an older API sends none), or the reason they cannot sample."""
    from workers import inference

    return inference.answer_sample(family, params, shape, weights, n, seed, steps, label, shard_records)


@celery_app.task(name=queue.SCORE_IMAGES, ignore_result=False)
def score_images(family: str, params: dict, shape: dict, weights: list[str], images: list[str],
                 labels: list[int] | None) -> dict:
    """{"losses": [...]}: each base64 PNG's denoising loss at fixed timesteps, or the reason the
    weights or the images cannot be scored."""
    from workers import inference

    return inference.answer_score_images(family, params, shape, weights, images, labels)
