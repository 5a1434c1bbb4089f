"""A load generator for erasure-request intake, usable against any running Obliviate.

    from bench import loadgen
    result = asyncio.run(loadgen.create_requests("http://127.0.0.1:8000", key, n=3000, concurrency=16))
    print(result.requests_per_s, result.p99_ms, len(result.acknowledged))

`concurrency` clients each keep one request in flight on their own keep-alive connection (a
closed loop), so the offered load is what the server can take at that concurrency. Every
request names a fresh subject and a fresh external id: each one creates a row.

Two HTTP clients, the same measurements:
- "httpx" (default): one httpx.AsyncClient per concurrent client, any URL (https too).
- "raw": a minimal HTTP/1.1 client on asyncio streams, for plain http only. httpx spends about a
  millisecond of CPU per request (its pool, h11, anyio layers); when the generator runs on the
  server's own cores that CPU is taken from the server, and "raw" takes a tenth of it.
Bodies are encoded before the clock starts either way.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore imports sniffio on every pool operation; when it is not installed each attempt
    # searches sys.path again, which costs more than the request. None in sys.modules makes the
    # import fail at once, and httpcore then assumes asyncio, as it would anyway.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx  # noqa: E402

CREATE_PATH = "/v1/erasure-requests"
BATCH_PATH = "/v1/erasure-requests/batch"
CLIENTS = ("httpx", "raw")

# (path, body, extra headers) -> (status, response body)
Post = Callable[[str, bytes, dict[str, str] | None], Awaitable[tuple[int, bytes]]]


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
    client: str = "httpx"

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
            "label": self.label, "client": self.client, "concurrency": self.concurrency, "calls": self.calls,
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


# The clients: each yields one Post per concurrent client, each with its own connection.


async def _httpx_posts(stack: AsyncExitStack, base_url: str, headers: dict[str, str], concurrency: int,
                       timeout: float) -> list[Post]:
    posts = []
    for _ in range(concurrency):
        # One client per connection: a shared pool scans all its connections on every request.
        client = await stack.enter_async_context(httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ))

        async def post(path: str, body: bytes, extra: dict[str, str] | None, client=client) -> tuple[int, bytes]:
            response = await client.post(path, content=body, headers=extra)
            return response.status_code, response.content

        posts.append(post)
    return posts


class RawConnection:
    """One keep-alive HTTP/1.1 connection: a request written in one piece, a response read by
    its Content-Length (which every answer of the service carries)."""

    def __init__(self, host: str, port: int, headers: dict[str, str], timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, extra: dict[str, str] | None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        more = "".join(f"{k}: {v}\r\n" for k, v in extra.items()) if extra else ""
        self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}{more}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                content = await self.reader.readexactly(length) if length else b""
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _raw_posts(stack: AsyncExitStack, base_url: str, headers: dict[str, str], concurrency: int,
                     timeout: float) -> list[Post]:
    url = urlsplit(base_url)
    if url.scheme != "http":
        raise ValueError("the raw client speaks plain http only; use the httpx client for https")
    connections = [RawConnection(url.hostname or "127.0.0.1", url.port or 80, headers, timeout) for _ in range(concurrency)]
    for connection in connections:
        stack.push_async_callback(connection.close)
    return [connection.post for connection in connections]


async def _drive(posts: list[Post], path: str, bodies: list[bytes], headers: list[dict[str, str] | None],
                 on_answer: Callable[[int, int, bytes], None]) -> tuple[float, list[float], Counter, int]:
    """Send every body; `on_answer` sees each answer after the clock has stopped, so that
    parsing them takes nothing from the server while it is measured."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    answers: list[tuple[int, int, bytes]] = []
    errors = 0
    next_index = 0

    async def worker(post: Post) -> None:
        nonlocal next_index, errors
        while next_index < len(bodies):
            index = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                status, content = await post(path, bodies[index], headers[index])
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, httpx.HTTPError, ValueError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            answers.append((index, status, content))

    started = time.perf_counter()
    await asyncio.gather(*(worker(post) for post in posts))
    wall = time.perf_counter() - started
    for answer in answers:
        on_answer(*answer)
    return wall, latencies, statuses, errors


async def _run(base_url: str, api_key: str, concurrency: int, client: str, timeout: float, path: str,
               bodies: list[bytes], headers: list[dict[str, str] | None], on_answer):
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}")
    common = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    async with AsyncExitStack() as stack:
        open_posts = _httpx_posts if client == "httpx" else _raw_posts
        posts = await open_posts(stack, base_url.rstrip("/"), common, concurrency, timeout)
        return await _drive(posts, path, bodies, headers, on_answer)


async def create_requests(
    base_url: str, api_key: str, n: int, concurrency: int, *, run: str | None = None,
    idempotency_keys: bool = False, client: str = "httpx", timeout: float = 30.0,
) -> LoadResult:
    """Send `n` POST /v1/erasure-requests from `concurrency` clients; every body is unique.
    With `idempotency_keys`, each request carries its own Idempotency-Key as a careful client's
    would (the server then also records the key and its response)."""
    run = run or uuid.uuid4().hex[:12]
    bodies = [json.dumps(request_body(run, i), separators=(",", ":")).encode() for i in range(n)]
    headers = [{"Idempotency-Key": f"{run}-{i}"} if idempotency_keys else None for i in range(n)]
    acknowledged: list[tuple[str, str]] = []

    def on_answer(index: int, status: int, content: bytes) -> None:
        if status in (200, 201):
            acknowledged.append((f"load-{run}-{index}", json.loads(content)["id"]))

    wall, latencies, statuses, errors = await _run(base_url, api_key, concurrency, client, timeout, CREATE_PATH,
                                                   bodies, headers, on_answer)
    return LoadResult(f"create c={concurrency}", concurrency, n, 1, wall, latencies, statuses, acknowledged, errors, client)


async def create_batches(
    base_url: str, api_key: str, calls: int, items_per_call: int = 1000, concurrency: int = 1, *,
    run: str | None = None, client: str = "httpx", timeout: float = 120.0,
) -> LoadResult:
    """Send `calls` POST /v1/erasure-requests/batch of `items_per_call` unique items each."""
    run = run or uuid.uuid4().hex[:12]
    bodies = [
        json.dumps([request_body(run, c * items_per_call + i, source="batch") for i in range(items_per_call)],
                   separators=(",", ":")).encode()
        for c in range(calls)
    ]
    acknowledged: list[tuple[str, str]] = []

    def on_answer(_index: int, status: int, content: bytes) -> None:
        if status == 200:
            for item in json.loads(content)["items"]:
                if item["result"] in ("created", "existing"):
                    acknowledged.append((item["request"]["external_id"], item["request"]["id"]))

    wall, latencies, statuses, errors = await _run(base_url, api_key, concurrency, client, timeout, BATCH_PATH,
                                                   bodies, [None] * calls, on_answer)
    return LoadResult(f"batch {items_per_call}/call c={concurrency}", concurrency, calls, items_per_call, wall,
                      latencies, statuses, acknowledged, errors, client)
