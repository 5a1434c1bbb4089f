"""`obliviate serve` replaces a dead worker (issue 9, item 11).

A worker killed with SIGKILL used to stay dead, its embedded beat lived on as an orphan, and
/readyz kept answering ready. Now /readyz reports the worker missing, the dead worker's beat and
pool children are stopped, a new worker is started after a backoff, and SIGTERM still stops
everything.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.security.live_server import LiveServer, database_for_pass
from tests.processes import children, living


def _worker_of(pid: int) -> int | None:
    workers = [child for child in children(pid) if b"celery" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(workers) <= 1, workers
    return workers[0] if workers else None


def _until(condition, timeout: float, what: str, server: LiveServer):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f}s:\n{server.tail()}")


def _readiness(base: str) -> tuple[int, dict]:
    try:
        answer = httpx.get(f"{base}/readyz", timeout=10)
    except httpx.TransportError:
        return 0, {}
    return answer.status_code, answer.json().get("checks", {})


def test_a_killed_worker_is_replaced_and_its_beat_stopped(tmp_path, request):
    # A backoff long enough for /readyz to be seen reporting the gap.
    server = LiveServer(tmp_path, database_url=database_for_pass(request), worker=True, WORKER_RESTART_BACKOFF_SECONDS="4")
    first_group = second = None
    with server:
        try:
            _until(lambda: _readiness(server.base) == (200, {"database": "ok", "broker": "ok", "worker": "ok"}),
                   90, "serve did not report a ready worker", server)
            first = _worker_of(server.process.pid)
            first_group = os.getpgid(first)
            # The embedded beat and the pool child run in the worker's process group.
            _until(lambda: len(living(first_group)) >= 3, 60, "the worker did not start its beat and pool", server)

            os.kill(first, signal.SIGKILL)
            status, checks = _until(lambda: (found := _readiness(server.base))[1].get("worker") == "missing" and found,
                                    30, "/readyz did not report the missing worker", server)
            assert status == 503
            _until(lambda: living(first_group) == [], 30, "the dead worker's beat and pool outlived it", server)

            second = _until(lambda: (pid := _worker_of(server.process.pid)) not in (None, first) and pid,
                            60, "the worker was not replaced", server)
            _until(lambda: _readiness(server.base)[0] == 200, 60, "serve did not become ready again", server)
            assert "restarting it" in server.tail()

            assert server.stop() == 0, server.tail()
            assert living(second) == [], "the replacement worker outlived serve"
        finally:
            for group in (first_group, second):
                if group is not None and living(group):
                    os.killpg(group, signal.SIGKILL)
