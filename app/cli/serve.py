"""`obliviate serve`: migrate, start one Celery worker with embedded beat, run the API.

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
from pathlib import Path

import typer

from app import __version__, migrate
from app.cli.common import check_secret, console, err_console
from app.config import Settings, get_settings

# A warm shutdown waits for the task in hand. Past this, the task is killed; its job row keeps
# its lease and the sweeper hands it to a worker again, so nothing is lost.
STOP_GRACE_SECONDS = 30.0
QUEUES = "default,unlearning"


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


def _die_with_parent() -> None:
    # If serve itself is killed with SIGKILL, the kernel still tells the worker to stop.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_worker(settings: Settings) -> subprocess.Popen:
    # The child reads the same settings; an absolute data dir keeps it on the same files even
    # if a relative OBLIVIATE_DATA_DIR would resolve elsewhere.
    env = {**os.environ, "OBLIVIATE_DATA_DIR": str(settings.data_dir.resolve())}
    return subprocess.Popen(
        worker_command(settings), env=env, start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
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


def _watch(process: subprocess.Popen, stopping: threading.Event) -> None:
    code = process.wait()
    if not stopping.is_set():
        err_console.print(
            f"[red]The worker exited (code {code}); background jobs will not run until serve is restarted.[/red]"
        )


def _cli_name() -> str:
    invoked = sys.argv[0] if sys.argv else ""
    return shlex.quote(invoked) if Path(invoked).name == "obliviate" else "obliviate"


def _banner(settings: Settings, host: str, port: int, worker_pid: int | None) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{f'[{shown_host}]' if ':' in shown_host else shown_host}:{port}"
    where = f"embedded default, data in {settings.data_dir.resolve()}" if settings.embedded else "external database"
    prefix = ""
    if settings.embedded and "OBLIVIATE_DATA_DIR" in os.environ:
        prefix = f"OBLIVIATE_DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
    console.print(f"[bold]Obliviate {__version__}[/bold] ({where})", soft_wrap=True)
    console.print(f"  API docs (OpenAPI):  {base}/docs", soft_wrap=True)
    console.print(f"  Health:              {base}/healthz  {base}/readyz", soft_wrap=True)
    console.print("  Create an API key:", soft_wrap=True)
    console.print(
        f"    {prefix}{_cli_name()} keys create --name portal --scopes requests:write,requests:read,requests:review",
        soft_wrap=True, markup=False,
    )
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
    worker: subprocess.Popen | None = None
    stopping = threading.Event()
    try:
        migrate.upgrade(settings.database_url)
        if workers:
            worker = start_worker(settings)
            threading.Thread(target=_watch, args=(worker, stopping), daemon=True).start()
        _banner(settings, host, port, worker.pid if worker else None)
        uvicorn.run(
            "app.main:create_app", factory=True, host=host, port=port,
            # Its access log would record raw paths and query strings; the app logs route templates.
            log_level=settings.log_level.lower(), proxy_headers=True, access_log=False,
        )
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        # A second SIGTERM must not cut the worker's shutdown short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopping.set()
        if worker is not None:
            err_console.print("stopping the worker...")
            stop_worker(worker)
