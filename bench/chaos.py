"""Chaos set test (docs/architecture.md, "The row is the job"; issue 5): erasure requests under load while processes die.

Starts a private PostgreSQL cluster and Redis on free ports in a temporary folder, the API
(uvicorn, one process), two Celery workers (-c 1) and beat with fast intervals, trains a tiny
mlp_classifier through the API, then lets concurrent clients submit, replay and review erasure
requests while a random fault hits every few seconds. Then it heals everything, waits until
every acknowledged request is terminal, and checks: nothing lost, nothing unexpected, no job
with two effects, idempotency honoured, every audit chain valid. Prints a table, writes
bench/results/chaos.json and exits non-zero when a goal is missed.

    .venv/bin/python bench/chaos.py                       # 2,000 requests, >= 30 faults every 5-15 s
    .venv/bin/python bench/chaos.py --short               # 150 requests, >= 6 faults every 2-4 s
    .venv/bin/python bench/chaos.py --requests 500 --seed 7 --output /tmp/chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from chaos_cluster import Cluster, check_binaries  # noqa: E402
from chaos_load import FaultInjector, Load, train_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = ("completed", "failed", "denied", "cancelled")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--fault-min", type=float, default=5.0, help="seconds between faults, at least")
    parser.add_argument("--fault-max", type=float, default=15.0, help="seconds between faults, at most")
    parser.add_argument("--min-faults", type=int, default=30)
    parser.add_argument("--pause-seconds", type=float, default=10.0, help="how long a SIGSTOPped Redis stays stopped")
    parser.add_argument("--lease-seconds", type=int, default=8)
    parser.add_argument("--heal-timeout", type=float, default=600.0, help="seconds allowed after healing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="150 requests, 8 clients, >= 6 faults every 2-4 s")
    parser.add_argument("--output", default=str(RESULTS / "chaos.json"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.short:
        args.requests, args.clients, args.fault_min, args.fault_max = 150, 8, 2.0, 4.0
        args.min_faults, args.pause_seconds = 6, 3.0
    return args


def _key(cluster: Cluster, name: str, scopes: str) -> dict[str, str]:
    out = cluster.cli("keys", "create", "--name", name, "--scopes", scopes, "--client", "chaos")
    if out.returncode != 0:
        raise RuntimeError(f"obliviate keys create failed: {out.stderr[-2000:]}")
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("key:"))
    return {"Authorization": f"Bearer {line.split(':', 1)[1].strip()}"}


def _statuses(cluster: Cluster) -> dict[str, str]:
    import psycopg

    with psycopg.connect(cluster.database_url(), connect_timeout=10) as connection:
        return {str(i): s for i, s in connection.execute("SELECT id, status FROM erasure_requests").fetchall()}


def _wait_terminal(cluster: Cluster, acknowledged: set[str], timeout: float, log) -> tuple[dict, float | None]:
    started = time.monotonic()
    statuses: dict[str, str] = {}
    while True:
        try:
            statuses = _statuses(cluster)
        except Exception as exc:  # healing may still be settling; the deadline decides
            log(f"status query failed: {type(exc).__name__}")
        open_ = [i for i in acknowledged if statuses.get(i) not in TERMINAL]
        if not open_:
            return statuses, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return statuses, None
        time.sleep(2)


def _effects(cluster: Cluster) -> dict:
    """Jobs that produced more than one model or dataset version, and completions without proof."""
    import psycopg

    with psycopg.connect(cluster.database_url(), connect_timeout=10) as connection:
        def rows(sql):
            return connection.execute(sql).fetchall()
        models = rows("SELECT origin->>'job_id', count(*) FROM model_versions WHERE origin->>'job_id' IS NOT NULL "
                      "GROUP BY 1 HAVING count(*) > 1")
        datasets = rows("SELECT origin->>'job_id', count(*) FROM dataset_versions WHERE origin->>'job_id' IS NOT NULL "
                        "GROUP BY 1 HAVING count(*) > 1")
        uncertified = rows("SELECT r.id FROM erasure_requests r LEFT JOIN certificates c ON c.request_id = r.id "
                           "WHERE r.status = 'completed' AND c.request_id IS NULL")
        jobs = rows("SELECT kind, status, attempt FROM jobs")
        durations = [r[0] for r in rows("SELECT EXTRACT(EPOCH FROM finished_at - started_at) FROM jobs "
                                        "WHERE kind = 'unlearning' AND finished_at IS NOT NULL")]
        versions = rows("SELECT count(*) FROM model_versions")[0][0]
    return {
        "duplicated_model_versions": [{"job_id": j, "versions": n} for j, n in models],
        "duplicated_dataset_versions": [{"job_id": j, "versions": n} for j, n in datasets],
        "completed_without_certificate": [str(r[0]) for r in uncertified],
        "jobs": dict(Counter(f"{kind}:{status}" for kind, status, _ in jobs)),
        "job_attempts": dict(sorted(Counter(attempt for *_, attempt in jobs).items())),
        "model_versions": versions,
        # Of the last attempt of each job (started_at is reset by every claim).
        "unlearning_job_seconds": {"mean": round(float(sum(durations)) / len(durations), 2) if durations else None,
                                   "max": round(float(max(durations)), 2) if durations else None},
    }


def _residual(cluster: Cluster, admin: dict, result, statuses: dict[str, str]) -> list[dict]:
    """Subjects of completed requests that are still in a live (not destroyed) dataset or model version."""
    import httpx

    done = {raw for rid, raw in result.existing_subjects.items() if statuses.get(rid) == "completed"}
    residual = []
    with httpx.Client(base_url=cluster.api_url, headers=admin, timeout=30) as client:
        for raw in sorted(done):
            found = client.post("/v1/subjects/lookup", json={"identifiers": {"user_id": raw}}).json()
            live = [{"dataset": hit["name"], "version": hit["version"], "current": hit["current"]}
                    for hit in found["datasets"] if not hit["destroyed"]]
            live += [{"model": hit["model"], "version": hit["version"], "current": hit["current"]}
                     for hit in found["models"] if not hit["destroyed"]]
            if live:
                residual.append({"subject": raw, "live": live})
    return residual


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> dict:
    check_binaries()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[chaos {time.strftime('%X')}] {message}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="obliviate-chaos-"))
    try:
        cluster = Cluster(workdir, lease_seconds=args.lease_seconds)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    injector = None

    def clean_up() -> None:
        if injector is not None:
            injector.stop.set()
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(clean_up)
    # SIGTERM ends the run like Ctrl-C does, through the finally below (main thread only: Python's rule).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        started = time.monotonic()
        cluster.start_postgres()
        cluster.start_redis()
        migrated = cluster.cli("db", "upgrade")
        if migrated.returncode != 0:
            raise RuntimeError(f"obliviate db upgrade failed: {migrated.stderr[-2000:]}")
        writer = _key(cluster, "chaos-portal", "requests:write,requests:read,requests:review")
        admin = _key(cluster, "chaos-admin", "admin")
        cluster.start_api()
        for name in ("worker-1", "worker-2"):
            cluster.start_worker(name)
        cluster.start_beat()
        train_model(cluster.api_url, admin, args.seed)
        log(f"services up and model trained in {time.monotonic() - started:.0f}s; load and faults start")

        fault_window = args.min_faults * (args.fault_min + args.fault_max) / 2
        rate = args.requests / fault_window  # spread the load over the faults, not ahead of them
        injector = FaultInjector(cluster, seed=args.seed, fault_min=args.fault_min, fault_max=args.fault_max,
                                 min_faults=args.min_faults, pause_seconds=args.pause_seconds, log=log)
        injector.start()
        load = Load(cluster.api_url, writer, requests=args.requests, clients=args.clients, rate=rate, seed=args.seed,
                    deadline=time.monotonic() + fault_window * 3 + 600)
        result = asyncio.run(load.run())
        log(f"load done in {result.seconds:.0f}s: {len(result.acknowledged)} acknowledged")
        injector.load_done.set()
        injector.join()
        restarted = cluster.heal()
        log(f"healed (restarted: {restarted or 'nothing'}); waiting for every request to end")
        acknowledged = set(result.acknowledged)
        statuses, settle = _wait_terminal(cluster, acknowledged, args.heal_timeout, log)
        effects = _effects(cluster)
        residual = _residual(cluster, admin, result, statuses)
        verify = cluster.cli("audit", "verify")
        report = _report(args, result, injector.injected, statuses, acknowledged, settle, effects, residual, verify,
                         restarted)
        report["seconds_total"] = round(time.monotonic() - started, 1)
        return report
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        clean_up()
        atexit.unregister(clean_up)


def _report(args, result, faults, statuses, acknowledged, settle, effects, residual, verify, restarted) -> dict:
    lost = sorted(i for i in acknowledged if statuses.get(i) not in TERMINAL)
    unexpected = sorted(set(statuses) - acknowledged)
    duplicated = len(effects["duplicated_model_versions"]) + len(effects["duplicated_dataset_versions"])
    counts = Counter(statuses.get(i, "missing") for i in acknowledged)
    goals = {
        "0 lost": not lost, "0 unexpected": not unexpected, "0 duplicated effects": duplicated == 0,
        "every chain valid": verify.returncode == 0, "all terminal within the heal timeout": settle is not None,
        "idempotency honoured": not result.replay_mismatches and not result.conflict_mismatches,
        "every completion certified": not effects["completed_without_certificate"],
        "no erased subject left in a live version": not residual,
        f"at least {args.min_faults} faults": len([f for f in faults if "error" not in f]) >= args.min_faults,
        "every client got its answers": not result.gave_up,
    }
    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("output", "quiet")},
        "acknowledged": len(acknowledged), "lost": len(lost), "unexpected": len(unexpected), "duplicated": duplicated,
        "failed": counts.get("failed", 0), "statuses": dict(counts),
        "unkeyed": result.unkeyed, "replays": result.replays, "replay_mismatches": result.replay_mismatches,
        "conflicts": result.conflicts, "conflict_mismatches": result.conflict_mismatches,
        "approved": result.approved, "denied": result.denied, "client_gave_up": result.gave_up,
        "client_retries": dict(result.retries), "load_seconds": round(result.seconds, 1),
        "seconds_to_terminal_after_heal": None if settle is None else round(settle, 1),
        "audit_verify_exit": verify.returncode, "audit_verify_output": verify.stdout[-1500:],
        "faults": faults, "fault_counts": dict(Counter(f["kind"] for f in faults)),
        "fault_errors": [f for f in faults if "error" in f], "restarted_at_heal": restarted,
        "residual_subjects": residual, "lost_ids": lost[:50], "unexpected_ids": unexpected[:50], **effects,
        "goals": goals, "ok": all(goals.values()),
    }


def print_table(report: dict) -> None:
    rows = [
        ("acknowledged requests", report["acknowledged"]), ("lost", report["lost"]),
        ("unexpected", report["unexpected"]),
        ("duplicated effects", report["duplicated"]), ("failed", report["failed"]),
        ("created without Idempotency-Key", report["unkeyed"]),
        ("idempotent replays (mismatches)", f"{report['replays']} ({len(report['replay_mismatches'])})"),
        ("key reuse, other body (not 422)", f"{report['conflicts']} ({len(report['conflict_mismatches'])})"),
        ("faults injected", f"{len(report['faults'])} {report['fault_counts']}"),
        ("terminal after healing, s", report["seconds_to_terminal_after_heal"]),
        ("obliviate audit verify exit", report["audit_verify_exit"]),
        ("statuses", report["statuses"]), ("jobs", report["jobs"]), ("job attempts", report["job_attempts"]),
        ("unlearning job seconds (last attempt)", report["unlearning_job_seconds"]),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n| " + "measure".ljust(width) + " | value |\n|" + "-" * (width + 2) + "|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    print("\ngoals: " + ", ".join(f"{name}: {'met' if met else 'MISSED'}" for name, met in report["goals"].items()))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    report = run(args)
    print_table(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {output}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
