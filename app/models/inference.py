"""Predictions (a language model's generate and score, an image model's sample and score-images), computed by an inference worker (workers/tasks.py, the `inference` queue).

The API loads no weights and no torch: it sends what the worker needs (family, params, shape, the
sha256 digests of the weights, the rows) as a task by name and waits for the answer in a thread
of its own, off the event loop and outside any transaction. No answer in time is a 503 with
Retry-After; so is a worker that `obliviate serve` supervises and that is down.

Workers take calls first come, first served, so two bounds keep one client from starving the
others: the work of one call (app/models/inference_budget.py, 422 above it), and the calls one
client has waiting at once in this process (429 with Retry-After above it, before a thread is
taken). Another client's call then waits behind at most that many bounded calls per client.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import anyio.to_thread
from fastapi.concurrency import run_in_threadpool

from app import queue
from app.config import get_settings
from app.db import get_sessionmaker
from app.deps import run_unit_of_work
from app.errors import Conflict, ServiceUnavailable
from app.health import supervision
from app.models import inference_budget as budget
from app.models import service
from app.routing import ClientSlots

_limiters: dict[int, anyio.CapacityLimiter] = {}
CALLS_IN_FLIGHT = ClientSlots("inference calls")


def _limiter(threads: int) -> anyio.CapacityLimiter:
    if threads not in _limiters:
        _limiters[threads] = anyio.CapacityLimiter(threads)
    return _limiters[threads]


async def load_current(principal, name: str, client: str | None, check) -> dict[str, Any]:
    """What a worker needs to answer with the model's current version, after `check(version)`.

    Read, and the session closed, in one threadpool call before the wait (no SessionDep: that
    would close it in a later call): no transaction or lock is held while a worker computes."""
    session = get_sessionmaker()()

    def load() -> dict[str, Any]:
        model = service.get_for(session, principal, name, client=client)
        version = service.current_version(session, model)
        check(version)
        return {"model": model.name, "version": version.version, "family": version.family, "params": version.params,
                "shape": version.shape, "weights": [s["weights"] for s in version.shards],
                # Training records per shard (None in versions written before they were kept):
                # a SISA image model draws each sample's shard in proportion to them.
                "shard_records": [s.get("records") for s in version.shards]}

    return await run_in_threadpool(run_unit_of_work, session, load, reads_only=True)


async def predict(client: str, loaded: dict[str, Any], rows: list[list[float]]) -> list[list[float | None]]:
    """Class probabilities per row (None where the network gave a value that is not finite)."""
    budget.check(loaded, len(rows))
    return (await call(client, queue.PREDICT, loaded, {"rows": rows}))["probabilities"]


async def generate(client: str, loaded: dict[str, Any], prompt: str, max_new_tokens: int, temperature: float,
                   seed: int) -> str:
    """The continuation of `prompt` by a language model's current version."""
    budget.check(loaded, budget.generate_positions(prompt, max_new_tokens, int(loaded["params"]["block_size"])))
    extra = {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    return (await call(client, queue.GENERATE, loaded, extra))["text"]


async def score(client: str, loaded: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    """Log-likelihood and token count of each text under a language model's current version."""
    budget.check(loaded, budget.score_positions(texts, int(loaded["params"]["block_size"])))
    return (await call(client, queue.SCORE, loaded, {"texts": texts}))["scores"]


async def sample(client: str, loaded: dict[str, Any], n: int, seed: int, steps: int, label: int | None) -> list[str]:
    """n images (base64 PNG) drawn from an image model's current version."""
    budget.check(loaded, budget.sample_positions(loaded, n, steps), image=True)
    extra = {"n": n, "seed": seed, "steps": steps, "label": label, "shard_records": loaded.get("shard_records")}
    return (await call(client, queue.SAMPLE, loaded, extra))["images"]


async def score_images(client: str, loaded: dict[str, Any], images: list[str], labels: list[int] | None) -> list[float | None]:
    """Each image's denoising loss at the fixed timesteps under an image model's current version."""
    budget.check(loaded, budget.score_image_positions(loaded, len(images)), image=True)
    return (await call(client, queue.SCORE_IMAGES, loaded, {"images": images, "labels": labels}))["losses"]


async def call(client: str, task: str, loaded: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Send `task` with the version's family, params, shape and weight digests plus `extra`,
    and wait for the worker's answer, in one of `client`'s slots."""
    settings = get_settings()
    timeout = settings.inference_timeout_seconds
    retry_after = {"Retry-After": str(max(1, math.ceil(timeout)))}
    if supervision.worker_state() == "missing":
        raise ServiceUnavailable(
            "No inference worker is running: the worker beside this server stopped and is being restarted.",
            headers=retry_after,
        )
    kwargs = {key: loaded[key] for key in ("family", "params", "shape", "weights")} | extra
    # One deadline for both waits: for a free thread, then for the worker's answer.
    deadline = time.monotonic() + timeout

    def send_and_wait() -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise queue.InferenceTimeout
        return queue.call(task, kwargs, left)

    try:
        with CALLS_IN_FLIGHT.slot(client, settings.max_inference_calls_per_client):
            answer = await anyio.to_thread.run_sync(send_and_wait, limiter=_limiter(settings.inference_threads))
    except queue.InferenceTimeout:
        raise ServiceUnavailable(
            f"No inference worker answered within {timeout:g} s: none consumes the '{queue.INFERENCE_QUEUE}' queue "
            "(obliviate serve --no-worker starts none), or all are busy.",
            headers=retry_after,
        ) from None
    if "error" in answer:
        raise Conflict(f"This version's weights cannot predict: {answer['error']}")
    return answer
