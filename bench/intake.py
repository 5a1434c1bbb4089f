"""Intake throughput and latency: POST /v1/erasure-requests and the batch endpoint over real HTTP.

Starts uvicorn (`app.main:create_app --factory`, 1 or 2 processes) on a free port against a
scratch PostgreSQL database (created, migrated and dropped here) or the embedded default (a
SQLite file in a temporary data folder), creates an API key directly in the database, and drives
it with bench/loadgen.py at concurrency 1, 16 and 64, then with batches of 1,000 items (one and
two calls in flight). Afterwards the database must hold exactly the acknowledged requests, each
with its subjects and its first audit event. Prints a table and writes bench/results/intake.json.

    .venv/bin/python bench/intake.py                          # PostgreSQL 1 and 2 processes, embedded
    .venv/bin/python bench/intake.py --config postgres:1 -n 5000
    .venv/bin/python bench/intake.py --config postgres:1 --client httpx --concurrency 16 --batch-calls 0
    .venv/bin/python bench/intake.py --url http://host:8000 --key obl_... [--database-url postgresql://...]

Unless --url points elsewhere, the generator runs on the machine of the server and the database
and takes CPU from them; the default "raw" client takes least (see bench/loadgen.py). Each row
shows the CPU per request of the server, PostgreSQL and the generator, and how much of the cores
other processes on the machine took meanwhile: on a shared machine, read the figures with that.
Each level waits (up to --max-wait) for a 1-minute load average under --quiet-load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.db import create_scratch_database, drop_database  # noqa: E402
from bench import loadgen  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "intake.json"
SECRET = "bench-intake-secret-0123456789abcdef-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# The database.


def in_service_env(env: dict[str, str]):
    """Point this process's settings and engine at the server's database, as the server sees it."""
    from app import config, db

    for name in [n for n in os.environ if n.startswith("OBLIVIATE_")]:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith("OBLIVIATE_")})
    config.reset_settings()
    db.dispose_engine()


def create_api_key() -> str:
    from app.db import session_scope
    from app.identities.service import hold_kinds
    from app.keys.service import create_key

    with session_scope() as session:
        key, plaintext = create_key(session, f"intake-bench-{uuid.uuid4().hex[:6]}", ["requests:write", "requests:read"])
        # The generator names each subject by e-mail and user_id, as a client whose datasets are keyed
        # by user_id does; a kind no dataset or link of the client holds would answer 422.
        hold_kinds(session, key.client, ["user_id"])
    return plaintext


def check_database(database_url: str, acknowledged: list[tuple[str, str]], prefix: str, whole_table: bool) -> dict[str, Any]:
    """The requests of this run in the database against the acknowledged ones: the same ids, no
    more, no fewer. On a scratch database every table must also hold exactly their rows."""
    from sqlalchemy import create_engine, text

    from app.db import normalise_database_url

    engine = create_engine(normalise_database_url(database_url))
    with engine.connect() as connection:
        stored = {
            (external_id, str(request_id)) for external_id, request_id in connection.execute(
                text("SELECT external_id, id FROM erasure_requests WHERE external_id LIKE :p"), {"p": f"{prefix}%"}
            )
        }
        # The bench's API key has an audit chain of its own (key:<id>); only requests' chains count.
        counts = {
            table: connection.scalar(text(f"SELECT count(*) FROM {table}{where}"))
            for table, where in (("erasure_requests", ""), ("request_subjects", ""),
                                 ("audit_events", " WHERE stream NOT LIKE 'key:%'"),
                                 ("audit_heads", " WHERE stream NOT LIKE 'key:%'"))
        } if whole_table else {}
    engine.dispose()
    # SQLite hands back UUIDs without dashes; compare the canonical form.
    stored = {(e, str(uuid.UUID(i))) for e, i in stored}
    acked = {(e, str(uuid.UUID(i))) for e, i in acknowledged}
    report = {
        "acknowledged": len(acknowledged), "acknowledged_distinct": len(acked), "stored": len(stored),
        "missing": len(acked - stored), "unexpected": len(stored - acked), "counts": counts,
    }
    n = len(acked)
    report["exact"] = (
        report["missing"] == 0 and report["unexpected"] == 0 and len(acknowledged) == n
        and (not whole_table or counts == {
            "erasure_requests": n, "request_subjects": 2 * n, "audit_events": n, "audit_heads": n,
        })
    )
    return report


# The server.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uvicorn_command(port: int, workers: int) -> list[str]:
    command = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]
    # uvicorn[standard] brings the C event loop and HTTP parser; name them so a missing one fails
    # loudly instead of silently measuring the pure-Python fallbacks.
    for module, flag in (("uvloop", ["--loop", "uvloop"]), ("httptools", ["--http", "httptools"])):
        try:
            __import__(module)
            command += flag
        except ImportError:
            pass
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def start_server(env: dict[str, str], port: int, workers: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(uvicorn_command(port, workers), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    ready = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                ready += response.status == 200
        except OSError:
            ready = 0
        # Several answers in a row, so that with two processes both have most likely started.
        if ready >= 3 * workers:
            return process
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError("uvicorn did not become healthy within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _process_cpu() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, user + system CPU seconds) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return found


def cpu_by_role(server_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the server (with its worker processes), PostgreSQL, this generator
    and everything else on the machine. Counted around a run, they show who had the cores."""
    processes = _process_cpu()
    server = {server_pid} | {pid for pid, (parent, _n, _c) in processes.items() if parent == server_pid}
    roles = {"server": 0.0, "postgres": 0.0, "generator": time.process_time(), "other": 0.0}
    for pid, (_parent, name, cpu) in processes.items():
        if pid in server:
            roles["server"] += cpu
        elif name.startswith("postgres"):
            roles["postgres"] += cpu
        elif pid != os.getpid():
            roles["other"] += cpu
    return roles


# Measuring.


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Other benchmarks and test runs share this machine: start only once the 1-minute load
    average is below `threshold` (or after `max_wait` seconds, and say so)."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    if load >= threshold:
        print(f"  (load average still {load:.2f} after {max_wait:.0f} s; measuring anyway)", flush=True)
    return round(load, 2)


def cpu_probe() -> float:
    """Milliseconds a fixed piece of pure-Python work takes here now (best of three). On a
    virtual machine the host's other tenants slow every process without showing up in its load
    average; this shows by how much, next to each row."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def run_async(coroutine):
    """The generator's event loop: uvloop when installed (it costs the shared cores less)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def measured(fn, server_pid: int | None) -> tuple[loadgen.LoadResult, dict[str, Any]]:
    load_before = round(os.getloadavg()[0], 2)
    probe = cpu_probe()
    before, started = cpu_by_role(server_pid), time.perf_counter()
    result = run_async(fn())
    after, wall = cpu_by_role(server_pid), time.perf_counter() - started
    items = max(len(result.acknowledged), 1)
    extra: dict[str, Any] = {"load_before": load_before, "load_after": round(os.getloadavg()[0], 2), "cpu_probe_ms": probe}
    for role in ("server", "postgres", "generator", "other"):
        spent = after[role] - before[role]
        extra[f"{role}_cpu_s"] = round(spent, 3)
        extra[f"{role}_cpu_us_per_item"] = round(spent / items * 1e6)
    # Share of all cores that processes outside this benchmark used meanwhile.
    extra["other_cpu_pct"] = round((after["other"] - before["other"]) / (wall * (os.cpu_count() or 1)) * 100, 1)
    if not server_pid:
        for role in ("server", "postgres", "other"):
            extra.pop(f"{role}_cpu_s"), extra.pop(f"{role}_cpu_us_per_item")
    return result, extra


def run_target(url: str, key: str, args, server_pid: int | None, session: str) -> tuple[list[dict], list[tuple[str, str]]]:
    rows, acknowledged = [], []
    # Opens the connections, fills the pools and the key cache; its requests are checked too.
    warm, _ = measured(lambda: loadgen.create_requests(url, key, args.warmup, 16, run=f"{session}-warm",
                                                       idempotency_keys=args.idempotency_keys, client=args.client), server_pid)
    acknowledged += warm.acknowledged
    levels = [("create", c) for c in args.concurrency] + [("batch", c) for c in (args.batch_concurrency if args.batch_calls else ())]
    for kind, concurrency in levels:
        attempts = []
        for attempt in range(args.repeat):
            wait_for_quiet(args.quiet_load, args.max_wait)
            run = f"{session}-{kind}-c{concurrency}-{attempt}"
            if kind == "create":
                load = lambda c=concurrency, r=run: loadgen.create_requests(  # noqa: E731
                    url, key, args.n, c, run=r, idempotency_keys=args.idempotency_keys, client=args.client)
            else:
                load = lambda c=concurrency, r=run: loadgen.create_batches(  # noqa: E731
                    url, key, args.batch_calls, args.batch_size, c, run=r, client=args.client)
            result, extra = measured(load, server_pid)
            acknowledged += result.acknowledged
            attempts.append({**result.summary(), **extra, "kind": kind})
            print_row(attempts[-1])
        # Other tenants of the host slow a run down, never speed it up: the fastest attempt is
        # the closest to what the service can do; all of them go into the JSON.
        best = max(attempts, key=lambda row: row["items_per_s"])
        rows.append({**best, "attempts": attempts})
    return rows, acknowledged


def print_row(row: dict[str, Any]) -> None:
    print(f"  {row['label']:<22} {row['calls']:>6} calls  {row['requests_per_s']:>8.1f} calls/s  "
          f"{row['items_per_s']:>9.1f} items/s  p50 {row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} ms  "
          f"statuses {row['statuses']}  load {row['load_before']}→{row['load_after']}  "
          f"other processes {row['other_cpu_pct']}% of the cores  probe {row['cpu_probe_ms']} ms", flush=True)


def run_config(name: str, workers: int, args, workdir: Path, session: str) -> dict[str, Any]:
    data_dir = workdir / f"{name}-{workers}"
    data_dir.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OBLIVIATE_", "PROMETHEUS_"))},
        "OBLIVIATE_DATA_DIR": str(data_dir), "OBLIVIATE_SECRET_KEY": SECRET, "OBLIVIATE_LOG_LEVEL": "WARNING",
    }
    if workers > 1:
        # As in docker-compose: several processes sum their metrics through files.
        metrics_dir = data_dir / "metrics"
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    pg_name = None
    if name == "postgres":
        database_url, pg_name = create_scratch_database(args.admin_url, "obliviate_intake")
    else:
        database_url = f"sqlite:///{data_dir / 'obliviate.db'}"
    env["OBLIVIATE_DATABASE_URL"] = database_url
    process = None
    try:
        from app import migrate

        in_service_env(env)
        migrate.upgrade(database_url)
        key = create_api_key()
        port = free_port()
        process = start_server(env, port, workers, data_dir / "uvicorn.log")
        print(f"\n{name}, {workers} process(es): {' '.join(uvicorn_command(port, workers)[1:])}", flush=True)
        load = wait_for_quiet(args.quiet_load, args.max_wait)
        rows, acknowledged = run_target(f"http://127.0.0.1:{port}", key, args, process.pid, session)
        stop_server(process)
        check = check_database(database_url, acknowledged, f"load-{session}-", whole_table=True)
        print(f"  database check: {json.dumps(check)}", flush=True)
        return {"database": name, "processes": workers, "load_at_start": load, "levels": rows, "check": check}
    finally:
        if process is not None:
            stop_server(process)
        from app import db

        db.dispose_engine()
        if pg_name:
            drop_database(args.admin_url, pg_name)


def markdown(configs: list[dict[str, Any]]) -> str:
    header = ("| database | processes | load | concurrency | calls | requests/s | items/s | p50 ms | p95 ms | p99 ms "
              "| CPU µs/item: server / PostgreSQL / generator | other processes | CPU probe ms | statuses |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for config in configs:
        for row in config["levels"]:
            what = f"{row['concurrency']}" if row["kind"] == "create" else f"batch {row['items_per_call']}/call, c={row['concurrency']}"
            cpu = " / ".join(str(row.get(f"{role}_cpu_us_per_item", "–")) for role in ("server", "postgres", "generator"))
            lines.append(
                f"| {config['database']} | {config['processes'] or '–'} | {row['load_before']}→{row['load_after']} | {what} "
                f"| {row['calls']} | {row['requests_per_s']:.0f} | {row['items_per_s']:.0f} | {row['p50_ms']:.1f} "
                f"| {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {cpu} | {row['other_cpu_pct']}% | {row['cpu_probe_ms']} "
                f"| {', '.join(f'{k}: {v}' for k, v in row['statuses'].items())} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", metavar="DATABASE:PROCESSES",
                        help="postgres:1, postgres:2 or embedded:1; repeatable (default: all three)")
    parser.add_argument("-n", type=int, default=3000, help="create requests per concurrency level")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    parser.add_argument("--warmup", type=int, default=300, help="requests sent before measuring")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each level; the table shows the fastest")
    parser.add_argument("--batch-calls", type=int, default=10, help="batch calls (0 skips the batch run)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="batch calls in flight (a bulk job may send more than one)")
    parser.add_argument("--idempotency-keys", action="store_true", help="send an Idempotency-Key with every create")
    parser.add_argument("--client", choices=loadgen.CLIENTS, default="raw",
                        help="the generator's HTTP client (see bench/loadgen.py); raw takes the least CPU from the server")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server on which the scratch database is created")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--key", help="API key with requests:write (with --url)")
    parser.add_argument("--database-url", help="the database of --url, to check what was stored (optional)")
    parser.add_argument("--quiet-load", type=float, default=1.5, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    session = uuid.uuid4().hex[:8]
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    configs: list[dict[str, Any]] = []
    print(f"intake benchmark, {machine['cpu_count']} cores; the load generator runs on the same machine "
          f"and competes with the server for CPU. n={args.n} per level.", flush=True)
    if args.url:
        if not args.key:
            parser.error("--url needs --key")
        wait_for_quiet(args.quiet_load, args.max_wait)
        rows, acknowledged = run_target(args.url.rstrip("/"), args.key, args, None, session)
        check = (check_database(args.database_url, acknowledged, f"load-{session}-", whole_table=False)
                 if args.database_url else None)
        print(f"  database check: {json.dumps(check)}", flush=True)
        configs.append({"database": args.url, "processes": None, "levels": rows, "check": check})
    else:
        workdir = Path(tempfile.mkdtemp(prefix="obliviate-intake-"))
        try:
            for spec in args.config or ["postgres:1", "postgres:2", "embedded:1"]:
                name, _, workers = spec.partition(":")
                if name not in ("postgres", "embedded"):
                    parser.error(f"unknown database {name!r}")
                configs.append(run_config(name, int(workers or 1), args, workdir, session))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    table = markdown(configs)
    print("\n" + table)
    if args.repeat > 1:
        print(f"\nEach row is the fastest of {args.repeat} runs (all of them are in the JSON).", end="")
    print(f"\nThe load generator ({args.client} client) shares the machine's cores with the server and PostgreSQL. "
          "CPU µs/item: CPU time per acknowledged request of the server processes, PostgreSQL and the generator; "
          "other processes: share of all cores used meanwhile by everything else on the machine; CPU probe: "
          "milliseconds for a fixed piece of Python work just before the row (lower is a faster machine).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "key"},
        "configs": configs, "table": table,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    ok = all(config["check"] is None or config["check"]["exact"] for config in configs)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
