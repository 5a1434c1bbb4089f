"""`obliviate serve`: migrate, start one Celery worker with embedded beat, run the API, and
replace the worker if it dies.

The worker is a child process in its own process group, so a Ctrl-C in the terminal reaches
only us and we shut it down in order (warm shutdown, then a kill after a grace period) instead
of racing the terminal's signal through the worker, its pool and its beat process.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from app import __version__, migrate
from app.cli.common import check_secret, console, err_console
from app.config import Settings, get_settings
from app.health import supervision

# A warm shutdown waits for the task in hand. Past this, the task is killed; its job row keeps
# its lease and the sweeper hands it to a worker again, so nothing is lost.
STOP_GRACE_SECONDS = 30.0
# The embedded worker takes every queue, predictions included (app/queue.py).
QUEUES = "default,unlearning,inference"


class _Stop(Exception):
    """SIGTERM, turned into an exception so that the finally blocks run."""


def worker_command(settings: Settings) -> list[str]:
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker", "-B",
        "-s", str(schedule), "-Q", QUEUES, "-c", "1", "--loglevel", "INFO",
        # Unique per serve process: two embedded servers sharing one Redis must not collide.
        "-n", f"obliviate-{os.getpid()}@%h",
    ]


def _prctl():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up here, not in the child: the supervisor forks while other threads run, and a child
# must not import or load a library (their locks may be held by a thread that is not copied).
_PRCTL = _prctl() if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # If serve itself is killed with SIGKILL, the kernel still tells the worker to stop.
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_worker(settings: Settings) -> subprocess.Popen:
    # The child reads the same settings; an absolute data dir keeps it on the same files even
    # if a relative OBLIVIATE_DATA_DIR would resolve elsewhere.
    env = {**os.environ, "OBLIVIATE_DATA_DIR": str(settings.data_dir.resolve())}
    return subprocess.Popen(
        worker_command(settings), env=env, start_new_session=True,
        preexec_fn=_die_with_parent if _PRCTL is not None else None,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_worker(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    pgid = process.pid
    if process.poll() is None:
        # Only the main process: it finishes the task in hand and then stops its pool and beat.
        # Signalling the whole group would kill the pool child mid-task.
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            err_console.print(f"worker did not stop within {grace:.0f}s; killing it")
    # Whatever is left of the group (pool children, beat) goes too.
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _end_group(pgid: int, grace: float = 5.0) -> None:
    """Stop what is left of a dead worker's process group: its embedded beat and pool children
    would otherwise live on as orphans (a second beat once the worker is replaced)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class WorkerSupervisor:
    """Keeps one worker with its embedded beat running beside the API: a worker that dies is
    replaced, after its beat and pool children are stopped, following a backoff that doubles
    while it keeps dying soon after a start (up to MAX_BACKOFF_SECONDS). /readyz reports the
    worker missing while none runs (app/health/supervision.py)."""

    MAX_BACKOFF_SECONDS = 60.0
    # A worker that ran this long is considered healthy: its next death restarts it quickly.
    STABLE_SECONDS = 60.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process = start_worker(settings)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()
        supervision.supervise(self.alive)

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        with self._lock:
            return self._process.poll() is None

    def _supervise(self) -> None:
        initial = max(0.1, self._settings.worker_restart_backoff_seconds)
        delay = initial
        while True:
            with self._lock:
                process, started = self._process, self._started
            code = process.wait()
            if self._stopping.is_set():
                return
            _end_group(process.pid)
            if time.monotonic() - started >= self.STABLE_SECONDS:
                delay = initial
            err_console.print(f"[red]The worker exited (code {code}); restarting it in {delay:.0f}s.[/red]")
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process, self._started = start_worker(self._settings), time.monotonic()
                err_console.print(f"worker restarted, pid {self._process.pid}")
            delay = min(delay * 2, self.MAX_BACKOFF_SECONDS)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        supervision.supervise(None)
        stop_worker(process)
        self._thread.join(timeout=5)


def _cli_name() -> str:
    invoked = sys.argv[0] if sys.argv else ""
    return shlex.quote(invoked) if Path(invoked).name == "obliviate" else "obliviate"


# The key docs/getting-started.md creates first; its scopes run the whole quick start.
QUICK_START_KEY = "keys create --name portal --client acme --scopes requests:write,requests:read,requests:review"


def _banner(settings: Settings, host: str, port: int, worker_pid: int | None) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{f'[{shown_host}]' if ':' in shown_host else shown_host}:{port}"
    where = f"embedded default, data in {settings.data_dir.resolve()}" if settings.embedded else "external database"
    prefix = ""
    if settings.embedded and "OBLIVIATE_DATA_DIR" in os.environ:
        prefix = f"OBLIVIATE_DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
    console.print(f"[bold]Obliviate {__version__}[/bold] ({where})", soft_wrap=True)
    console.print(f"  Dashboard:           {base}/admin  (sign in with an API key)", soft_wrap=True)
    console.print(f"  API docs (OpenAPI):  {base}/docs", soft_wrap=True)
    console.print(f"  Health:              {base}/healthz  {base}/readyz", soft_wrap=True)
    console.print("  Create an API key (the quick start's: it files, reviews and reads requests):", soft_wrap=True)
    console.print(f"    {prefix}{_cli_name()} {QUICK_START_KEY}", soft_wrap=True, markup=False)
    if worker_pid is not None:
        console.print(f"  Worker:              celery worker + beat, queues {QUEUES}, pid {worker_pid}", soft_wrap=True)
    else:
        console.print("  Worker:              not started (--no-worker); run Celery workers separately", soft_wrap=True)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    workers: bool = typer.Option(True, "--workers/--no-worker", help="Start one Celery worker with beat beside the API."),
) -> None:
    """Migrate the database, start a worker with beat, and serve the API in the foreground."""
    import uvicorn

    settings = get_settings()
    check_secret(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    def on_sigterm(_signum, _frame):
        raise _Stop

    # uvicorn takes SIGTERM over while it runs and raises it again once it has shut down; this
    # handler turns that into an orderly exit, here or during start-up.
    signal.signal(signal.SIGTERM, on_sigterm)
    worker: WorkerSupervisor | None = None
    try:
        migrate.upgrade(settings.database_url)
        if workers:
            worker = WorkerSupervisor(settings)
        _banner(settings, host, port, worker.pid if worker else None)
        uvicorn.run(
            "app.main:create_app", factory=True, host=host, port=port,
            # Its access log would record raw paths and query strings; the app logs route templates.
            log_level=settings.log_level.lower(), access_log=False,
            # Forwarding headers only from OBLIVIATE_TRUSTED_PROXIES: uvicorn's default believes
            # loopback, which would let any local caller pick the address the sign-in limit counts.
            proxy_headers=True, forwarded_allow_ips=settings.trusted_proxy_networks(),
            # SIGTERM stops the server even if a request never finishes: past this it is cancelled.
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        )
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        # A second SIGTERM must not cut the worker's shutdown short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker is not None:
            err_console.print("stopping the worker...")
            worker.stop()
