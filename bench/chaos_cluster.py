"""The processes of the chaos run: a private PostgreSQL cluster, a private Redis, the API, two
Celery workers and beat, all started by us in their own process groups, so that faults and the
final clean-up reach only what we started, never the machine's shared services."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_APP = "obliviate-api"  # application_name of the API's connections: the target of one fault


class MissingBinaries(RuntimeError):
    """initdb, pg_ctl or redis-server is not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"):
        for folder in sorted(glob.glob(pattern), reverse=True):
            if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
                return Path(folder)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    raise MissingBinaries("PostgreSQL server binaries (initdb, pg_ctl) were not found")


def check_binaries() -> None:
    postgres_bin()
    for name in ("redis-server", "redis-cli"):
        if shutil.which(name) is None:
            raise MissingBinaries(f"{name} was not found")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


class Cluster:
    def __init__(self, workdir: Path, *, lease_seconds: int):
        self.workdir = workdir
        self.lease_seconds = lease_seconds
        self.pg_bin = postgres_bin()
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.pgdata = workdir / "pg" / "data"
        self.data_dir = workdir / "data"
        self.logs = workdir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self.groups: set[int] = set()  # every process group we ever started, for the final clean-up
        # initdb and postgres refuse to run as root: they run as the postgres user (or whoever we are).
        self.pg_user = "postgres" if os.geteuid() == 0 else None

    # PostgreSQL.

    def _as_pg(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.pg_user, "--", *command] if self.pg_user else command

    def start_postgres(self) -> None:
        (self.workdir / "pg").mkdir()
        if self.pg_user:
            os.chmod(self.workdir, 0o755)
            shutil.chown(self.workdir / "pg", self.pg_user, self.pg_user)
        initdb = [str(self.pg_bin / "initdb"), "-D", str(self.pgdata), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8"]
        subprocess.run(self._as_pg(initdb), check=True, capture_output=True)
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            # Here rather than on pg_ctl's command line, so every restart keeps port and settings.
            # fsync=off: a killed server still has its WAL in the OS cache; only a machine crash could lose it.
            conf.write(f"port = {self.pg_port}\nunix_socket_directories = '{self.workdir / 'pg'}'\n"
                       "listen_addresses = '127.0.0.1'\nmax_connections = 300\nfsync = off\n")
        self._pg_ctl("start")
        admin = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"
        import psycopg

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE obliviate")

    def _pg_ctl(self, *args: str) -> None:
        log = str(self.workdir / "pg" / "server.log")
        command = [str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), "-l", log, "-w", "-t", "60", *args]
        subprocess.run(self._as_pg(command), check=True, capture_output=True)

    def restart_postgres(self) -> None:
        self._pg_ctl("restart", "-m", "immediate")

    def postgres_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def postgres_up(self) -> bool:
        pid = self.postgres_pid()
        return pid is not None and _alive(pid) and subprocess.run(
            [str(self.pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-q"]).returncode == 0

    def stop_postgres(self) -> None:
        pid = self.postgres_pid()
        if pid is None or not self.pgdata.exists():
            return
        command = [str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"]
        subprocess.run(self._as_pg(command), capture_output=True, timeout=60)
        if _alive(pid):  # pg_ctl could not stop it (e.g. a damaged data folder): the postmaster goes by force
            os.kill(pid, signal.SIGKILL)

    def database_url(self, application_name: str | None = None) -> str:
        url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/obliviate"
        return f"{url}?application_name={application_name}" if application_name else url

    # Redis.

    def start_redis(self) -> None:
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(self.workdir)])
        wait_until(self.redis_up, 20, "redis")

    def redis_up(self) -> bool:
        ping = ["redis-cli", "-p", str(self.redis_port), "ping"]
        return subprocess.run(ping, capture_output=True, text=True, timeout=5).stdout.strip() == "PONG"

    def restart_redis(self) -> None:
        """Shut down without saving, so every queued message is lost, and start again."""
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "shutdown", "nosave"], capture_output=True, timeout=10)
        self.processes["redis"].wait(timeout=10)
        self.start_redis()

    def pause_redis(self, seconds: float) -> None:
        pid = self.processes["redis"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    # The service's own processes.

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OBLIVIATE_")}
        return {
            **base, "OBLIVIATE_DATABASE_URL": self.database_url(),
            "OBLIVIATE_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0", "OBLIVIATE_DATA_DIR": str(self.data_dir),
            "OBLIVIATE_SECRET_KEY": "chaos-secret-key-0123456789abcdef-0123456789",
            "OBLIVIATE_DEVICE": "cpu", "OBLIVIATE_LOG_LEVEL": "WARNING", "OBLIVIATE_SWEEP_INTERVAL_SECONDS": "1",
            "OBLIVIATE_PLAN_INTERVAL_SECONDS": "1", "OBLIVIATE_BATCH_WINDOW_SECONDS": "2",
            "OBLIVIATE_JOB_LEASE_SECONDS": str(self.lease_seconds), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            # The faults kill and pause workers on purpose, often the same job's twice: they are
            # not the out-of-memory deaths that job_max_lost_leases stops retrying.
            "OBLIVIATE_JOB_MAX_LOST_LEASES": "5",
            **extra,
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from app.cli import main; main()", *args]
        return subprocess.run(command, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=120)

    def start_api(self) -> None:
        env = self.env(OBLIVIATE_DATABASE_URL=self.database_url(API_APP))
        self._spawn("api", [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                            "--port", str(self.api_port), "--no-access-log", "--log-level", "warning"], env)
        wait_until(self.api_up, 60, "the API")

    def api_up(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_worker(self, name: str) -> None:
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "worker", "-Q",
                           "default,unlearning", "-c", "1", "-n", f"chaos-{name}-{time.monotonic_ns()}@%h",
                           "--without-gossip", "--without-mingle", "--loglevel", "INFO"])

    def start_beat(self) -> None:
        self._spawn("beat", [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery_app", "beat", "-s",
                             str(self.workdir / "beat-schedule"), "--loglevel", "WARNING"])

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        self.groups.add(process.pid)

    def children(self, name: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.processes[name].pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def terminate_api_connections(self) -> int:
        import psycopg

        with psycopg.connect(self.database_url(), autocommit=True, connect_timeout=5) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (API_APP,),
            ).fetchall()
        return len(rows)

    def kill_pid(self, pid: int, sig: int) -> None:
        """Signal one of our processes (or a pool child of one of our workers), nothing else."""
        ours = {p.pid for p in self.processes.values() if p.poll() is None}
        ours |= {child for name in self.processes if name.startswith("worker") for child in self.children(name)}
        if pid not in ours:
            raise RuntimeError(f"pid {pid} is not a process this harness started")
        os.kill(pid, sig)

    def busy_pids(self) -> list[int]:
        """Pool processes holding a running job right now: the job's progress names its process,
        from the first heartbeat of the attempt on (before that it names the previous attempt's)."""
        import psycopg

        try:
            with psycopg.connect(self.database_url(), connect_timeout=3) as connection:
                rows = connection.execute("SELECT progress->>'pid' FROM jobs WHERE status = 'running' "
                                          "AND progress->>'attempt' = attempt::text").fetchall()
        except psycopg.Error:
            return []
        return [int(pid) for (pid,) in rows if pid and pid.isdigit()]

    def heal(self) -> list[str]:
        """Bring every part back up; answers what had to be restarted."""
        restarted = []
        redis = self.processes["redis"]
        if redis.poll() is None:
            os.kill(redis.pid, signal.SIGCONT)
        elif not self.redis_up():
            self.start_redis()
            restarted.append("redis")
        if not self.postgres_up():
            if self.postgres_pid():
                self._pg_ctl("restart", "-m", "immediate")
            else:
                self._pg_ctl("start")
            restarted.append("postgres")
        if not self.alive("api"):
            self.start_api()
            restarted.append("api")
        for name in ("worker-1", "worker-2"):
            if not self.alive(name):
                self.start_worker(name)
                restarted.append(name)
        if not self.alive("beat"):
            self.start_beat()
            restarted.append("beat")
        return restarted

    def kill_group(self, pgid: int, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        """Everything we started, in every group we ever made; then the cluster."""
        redis = self.processes.get("redis")
        if redis is not None and redis.poll() is None:
            os.kill(redis.pid, signal.SIGCONT)  # a paused Redis cannot act on SIGTERM
        for name, process in self.processes.items():
            if process.poll() is None and name != "redis":
                self.kill_group(process.pid, signal.SIGTERM)
        self._wait_all(10)
        for pgid in self.groups:
            self.kill_group(pgid)
        self._wait_all(5)
        self.stop_postgres()

    def _wait_all(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return True
