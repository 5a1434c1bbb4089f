"""A real Celery worker (with embedded beat) as a subprocess, for tests about the workers; waits on
its jobs and requests; and the planner and queued jobs run in the test process, for tests that
choose when each step happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "OBLIVIATE_SWEEP_INTERVAL_SECONDS": "1",
    "OBLIVIATE_PLAN_INTERVAL_SECONDS": "1",
    "OBLIVIATE_BATCH_WINDOW_SECONDS": "1",
    "OBLIVIATE_JOB_LEASE_SECONDS": "8",
}


class Worker:
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None,
                 queues: str = "default,unlearning,inference", beat: bool = True):
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.queues, self.beat = queues, beat
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        env = {**os.environ, **FAST, **self.extra_env, "OMP_NUM_THREADS": "1"}
        schedule = Path(env["OBLIVIATE_DATA_DIR"]) / f"beat-{os.getpid()}-{time.monotonic_ns()}"
        self._log = open(self.log_path, "ab")
        beat = ["-B", "-s", str(schedule)] if self.beat else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker", *beat,
             "-Q", self.queues, "-c", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "-n", f"test-{self.queues.replace(',', '-')}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill(self, pid: int) -> bool:
        """SIGKILL one of this worker's processes (the 'worker killed mid-job' fault)."""
        if pid not in self.children():
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_job(client: httpx.Client, headers: dict, job_id: str, timeout: float = 240) -> dict:
    def done():
        body = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        return body if body.get("status") in ("completed", "failed") else None

    return wait_for(done, timeout, what=f"job {job_id}")


def wait_terminal(client: httpx.Client, headers: dict, request_id: str, timeout: float) -> dict:
    def terminal():
        body = client.get(f"/v1/erasure-requests/{request_id}", headers=headers).json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(terminal, timeout, interval=0.5, what=f"request {request_id}")


def execute_queued(kind: str, *, close_windows: bool = True) -> list[str]:
    """Run the queued jobs of `kind` in this process; by default first closes their batch windows."""
    from sqlalchemy import select

    from app.db import session_scope, utcnow
    from app.jobs.models import Job
    from workers import jobs

    with session_scope() as session:
        if close_windows:
            for job in session.scalars(select(Job).where(Job.kind == kind, Job.status == "queued")):
                job.not_before = min(job.not_before or utcnow(), utcnow())
        ids = [str(j.id) for j in session.scalars(select(Job).where(Job.kind == kind, Job.status == "queued"))]
    return [jobs.execute(job_id) for job_id in ids]


def plan_approved() -> int:
    """Plan the approved requests into unlearning jobs, as the beat does; how many requests it planned."""
    from app.db import session_scope
    from app.unlearning import planner

    with session_scope() as session:
        return planner.plan_approved(session)
