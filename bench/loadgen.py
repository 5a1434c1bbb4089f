"""A load generator for erasure-request intake, usable against any running Obliviate.

    from bench import loadgen
    result = asyncio.run(loadgen.create_requests("http://127.0.0.1:8000", key, n=3000, concurrency=16))
    print(result.requests_per_s, result.p99_ms, len(result.acknowledged))

`concurrency` clients each keep one request in flight on their own connection (closed loop), so
the offered load is what the server can take at that concurrency. Every request names a fresh
subject and a fresh external id, so each one creates a row and nothing is deduplicated.

The generator shares the machine's cores with the server when both run on one host, so it is
kept light: bodies are encoded before the clock starts, connections are reused, and a request
costs only httpx's send and one JSON parse of the answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

CREATE_PATH = "/v1/erasure-requests"
BATCH_PATH = "/v1/erasure-requests/batch"


@dataclass
class LoadResult:
    """What one run sent and what came back. Latencies are per HTTP call, in seconds."""

    label: str
    concurrency: int
    calls: int
    items_per_call: int
    wall_s: float
    latencies_s: list[float]
    statuses: Counter
    # (external id, request id) of every item the server acknowledged with 200 or 201.
    acknowledged: list[tuple[str, str]] = field(default_factory=list)
    transport_errors: int = 0

    @property
    def ok_calls(self) -> int:
        return sum(count for status, count in self.statuses.items() if status in (200, 201))

    @property
    def requests_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s else 0.0

    @property
    def items_per_s(self) -> float:
        return len(self.acknowledged) / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return percentile(self.latencies_s, q) * 1000 if self.latencies_s else None

    @property
    def p50_ms(self) -> float | None:
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile_ms(99)

    def summary(self) -> dict[str, Any]:
        rounded = lambda v: None if v is None else round(v, 2)  # noqa: E731
        return {
            "label": self.label, "concurrency": self.concurrency, "calls": self.calls,
            "items_per_call": self.items_per_call, "acknowledged": len(self.acknowledged),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors, "wall_s": round(self.wall_s, 3),
            "requests_per_s": round(self.requests_per_s, 1), "items_per_s": round(self.items_per_s, 1),
            "p50_ms": rounded(self.p50_ms), "p95_ms": rounded(self.p95_ms), "p99_ms": rounded(self.p99_ms),
            "max_ms": rounded(max(self.latencies_s) * 1000) if self.latencies_s else None,
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def request_body(run: str, index: int, jurisdiction: str = "gdpr", source: str = "portal") -> dict[str, Any]:
    """A create body with a subject and an external id no other request of any run shares."""
    return {
        "subject": {"identifiers": {"email": f"load-{run}-{index}@example.org", "user_id": f"load-{run}-{index}"}},
        "jurisdiction": jurisdiction, "source": source, "external_id": f"load-{run}-{index}",
    }


def _client(base_url: str, api_key: str, concurrency: int, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        # One connection per client task, kept open for the whole run.
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )


async def _drive(client: httpx.AsyncClient, path: str, bodies: list[bytes], headers: list[dict[str, str] | None],
                 concurrency: int, on_answer) -> tuple[float, list[float], Counter, int]:
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, errors
        while next_index < len(bodies):
            index = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                response = await client.post(path, content=bodies[index], headers=headers[index])
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            on_answer(index, response)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses, errors


async def create_requests(
    base_url: str, api_key: str, n: int, concurrency: int, *, run: str | None = None,
    idempotency_keys: bool = False, timeout: float = 30.0,
) -> LoadResult:
    """Send `n` POST /v1/erasure-requests from `concurrency` clients; every body is unique.
    With `idempotency_keys`, each request carries its own Idempotency-Key as a careful client's
    would (the server then also records the key and its response)."""
    run = run or uuid.uuid4().hex[:12]
    bodies = [json.dumps(request_body(run, i), separators=(",", ":")).encode() for i in range(n)]
    headers = [{"Idempotency-Key": f"{run}-{i}"} if idempotency_keys else None for i in range(n)]
    acknowledged: list[tuple[str, str]] = []

    def on_answer(index: int, response: httpx.Response) -> None:
        if response.status_code in (200, 201):
            acknowledged.append((f"load-{run}-{index}", json.loads(response.content)["id"]))

    async with _client(base_url, api_key, concurrency, timeout) as client:
        wall, latencies, statuses, errors = await _drive(client, CREATE_PATH, bodies, headers, concurrency, on_answer)
    return LoadResult(f"create c={concurrency}", concurrency, n, 1, wall, latencies, statuses, acknowledged, errors)


async def create_batches(
    base_url: str, api_key: str, calls: int, items_per_call: int = 1000, concurrency: int = 1, *,
    run: str | None = None, timeout: float = 120.0,
) -> LoadResult:
    """Send `calls` POST /v1/erasure-requests/batch of `items_per_call` unique items each."""
    run = run or uuid.uuid4().hex[:12]
    bodies = [
        json.dumps([request_body(run, c * items_per_call + i, source="batch") for i in range(items_per_call)],
                   separators=(",", ":")).encode()
        for c in range(calls)
    ]
    acknowledged: list[tuple[str, str]] = []

    def on_answer(_index: int, response: httpx.Response) -> None:
        if response.status_code == 200:
            for item in json.loads(response.content)["items"]:
                if item["result"] in ("created", "existing"):
                    acknowledged.append((item["request"]["external_id"], item["request"]["id"]))

    async with _client(base_url, api_key, concurrency, timeout) as client:
        wall, latencies, statuses, errors = await _drive(client, BATCH_PATH, bodies, [None] * calls, concurrency, on_answer)
    return LoadResult(f"batch {items_per_call}/call c={concurrency}", concurrency, calls, items_per_call, wall,
                      latencies, statuses, acknowledged, errors)
