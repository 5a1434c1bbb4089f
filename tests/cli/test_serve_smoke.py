"""`obliviate serve` as a user runs it: a real process on a free port, driven over HTTP.

The embedded variant runs in both passes (it is what `make serve` gives a new user); the services
variant points the same command at the pass's PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SERVICES, TEST_REDIS_URL, TEST_SECRET
from tests.objects import request_body
from tests.processes import children, cli_command, free_port, living, serve_env

PLANTED = "planted-serve-smoke-41c9@example.org"


def _wait_ready(base: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"serve exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                ready = httpx.get(f"{base}/readyz", timeout=5)
                if ready.status_code == 200:
                    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"serve did not become ready:\n{log.read_text()[-3000:]}")


def _drive(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([*cli_command(), "serve", "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    worker_pgid = None
    try:
        _wait_ready(base, server, log)
        workers = [pid for pid in children(server.pid) if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 1, workers
        worker_pgid = workers[0]
        assert os.getpgid(worker_pgid) == worker_pgid
        assert f"{base}/docs" in log.read_text()
        assert "keys create" in log.read_text()

        created_key = subprocess.run(
            [*cli_command(), "keys", "create", "--name", "smoke", "--scopes", "requests:write,requests:read,requests:review"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert created_key.returncode == 0, created_key.stderr
        headers = {"Authorization": f"Bearer {re.search(r'obl_[A-Za-z0-9_-]+', created_key.stdout).group(0)}"}

        body = request_body(identifiers={"email": PLANTED}, external_id="smoke-1",
                            identity_verification={"status": "verified", "method": "portal"})
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            first = http.post("/v1/erasure-requests", json=body, headers={"Idempotency-Key": "smoke-key-1"})
            assert first.status_code == 201, first.text
            replay = http.post("/v1/erasure-requests", json=body, headers={"Idempotency-Key": "smoke-key-1"})
            assert replay.status_code == 201 and replay.json() == first.json()
            request_id = first.json()["id"]
            read = http.get(f"/v1/erasure-requests/{request_id}")
            assert read.status_code == 200 and read.json()["status"] == "received"
            approved = http.post(f"/v1/erasure-requests/{request_id}/approve")
            assert approved.status_code == 200 and approved.json()["status"] == "approved", approved.text
            assert http.get(f"/v1/erasure-requests/{request_id}/audit").json()["chain_valid"] is True
            assert PLANTED not in first.text + read.text + approved.text
            assert http.get("/openapi.json").status_code == 200

        # Beat → broker → worker: the sweeper's message must arrive (the interval is shortened).
        deadline = time.monotonic() + 60
        while not re.search(r"Task workers\.tasks\.sweep\[[^\]]+\] received", log.read_text()):
            assert time.monotonic() < deadline, f"no task reached the worker:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert living(worker_pgid) == [], "the worker outlived serve"
        text = log.read_text()
        assert "Warm shutdown" in text
        assert PLANTED not in text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if worker_pgid is not None and living(worker_pgid):
            os.killpg(worker_pgid, signal.SIGKILL)


def test_serve_embedded_default(tmp_path):
    data_dir = tmp_path / "data"
    _drive(tmp_path, serve_env(data_dir))
    assert (data_dir / "obliviate.db").exists() and (data_dir / "broker.db").exists()
    assert (data_dir / "secret.key").exists()


@pytest.mark.skipif(not SERVICES, reason="services pass only (OBLIVIATE_TEST_DATABASE_URL)")
def test_serve_on_postgres_and_redis(tmp_path, database_url):
    settings = {"DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET}
    if TEST_REDIS_URL:
        settings["BROKER_URL"] = TEST_REDIS_URL
    _drive(tmp_path, serve_env(tmp_path / "data", **settings))
