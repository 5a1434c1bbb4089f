"""`obliviate serve` as a real process on a free loopback port, for the concurrency tests.

The embedded pass runs it on its own data folder (SQLite, the SQLite-backed broker); the services
pass points it at the pass's PostgreSQL database and Redis, as test_serve_smoke does.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import SERVICES, TEST_REDIS_URL, TEST_SECRET
from tests.processes import cli_command, free_port, serve_env

# Hang timeouts, not performance figures: a healthy server answers in a fraction of these.
ANSWER_TIMEOUT = 30.0
# A write may wait for SQLite's write lock (busy_timeout, 5 s) before its 503; a client must
# outwait that to see the answer.
WRITE_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class LiveServer:
    def __init__(self, tmp_path: Path, *, database_url: str | None = None, worker: bool = False, **settings: str):
        if SERVICES:
            assert database_url, "the services pass needs the pass's database"
            settings = {"DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET, **settings}
            if TEST_REDIS_URL:
                settings["BROKER_URL"] = TEST_REDIS_URL
        self.env = serve_env(tmp_path / "data", **settings)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.worker = worker
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LiveServer:
        command = [*cli_command(), "serve", "--port", str(self.port)] + ([] if self.worker else ["--no-worker"])
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(command, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.tail()}"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"serve did not start:\n{self.tail()}")

    def __exit__(self, *_exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def key(self, scopes: str, client: str) -> dict[str, str]:
        created = subprocess.run(
            [*cli_command(), "keys", "create", "--name", f"{client}-key", "--client", client, "--scopes", scopes],
            env=self.env, capture_output=True, text=True, timeout=120,
        )
        assert created.returncode == 0, created.stderr
        return {"Authorization": f"Bearer {re.search(r'obl_[A-Za-z0-9_-]+', created.stdout).group(0)}"}

    def stop(self) -> int:
        """SIGTERM, as an orchestrator sends it; the server must be gone within STOP_TIMEOUT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve ignored SIGTERM for {STOP_TIMEOUT:.0f}s:\n{self.tail()}") from None


def database_for_pass(request) -> str | None:
    """The pass's database for the services pass; the embedded pass uses the server's own."""
    return request.getfixturevalue("database_url") if SERVICES else None
