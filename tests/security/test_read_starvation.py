"""Many concurrent readers are served, slower but never refused (issue 9, item 3).

On the embedded default every session began with SQLite's write lock and committed in a second
threadpool call, so 50 concurrent GET /v1/erasure-requests held every thread while they waited
for each other: three out of four were answered 503 after 30 s, other clients' requests too. Reads
now begin deferred (no write lock), take, use and end their transaction on one thread, and the
SQLite pool has a connection for every thread.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.objects import request_body
from tests.security.live_server import ANSWER_TIMEOUT, LiveServer, database_for_pass

READERS, READS = 64, 256
LIST = "/v1/erasure-requests"


async def _read_together(base: str, crowd: dict, other: dict) -> tuple[list[int], list[int]]:
    limits = httpx.Limits(max_connections=READERS + 8, max_keepalive_connections=READERS + 8)
    gate = asyncio.Semaphore(READERS)
    async with httpx.AsyncClient(base_url=base, timeout=ANSWER_TIMEOUT, limits=limits) as http:

        async def read(headers: dict, path: str = LIST) -> int:
            async with gate:
                return (await http.get(path, headers=headers, params={"limit": 50})).status_code

        async def other_client() -> list[int]:
            codes = []
            for _ in range(16):
                # Not behind the crowd's gate: it arrives while the 64 readers are in flight.
                codes.append((await http.get(LIST, headers=other, params={"limit": 50})).status_code)
            return codes

        crowd_codes, other_codes = await asyncio.gather(
            asyncio.gather(*(read(crowd) for _ in range(READS))), other_client(),
        )
    return list(crowd_codes), other_codes


def test_sixty_four_concurrent_readers_are_all_served(tmp_path, request):
    with LiveServer(tmp_path, database_url=database_for_pass(request)) as server:
        crowd = server.key("requests:read,requests:write", client="crowd")
        other = server.key("requests:read,requests:write", client="other")
        with httpx.Client(base_url=server.base, timeout=ANSWER_TIMEOUT) as http:
            for index in range(60):
                for headers, who in ((crowd, "crowd"), (other, "other")):
                    created = http.post(LIST, headers=headers, json=request_body(
                        identifiers={"email": f"{who}-{index}@example.org"}, external_id=f"{who}-{index}",
                    ))
                    assert created.status_code == 201, created.text

        crowd_codes, other_codes = asyncio.run(_read_together(server.base, crowd, other))

        assert crowd_codes == [200] * READS, {code: crowd_codes.count(code) for code in set(crowd_codes)}
        assert other_codes == [200] * len(other_codes), other_codes
        assert server.stop() == 0, server.tail()
