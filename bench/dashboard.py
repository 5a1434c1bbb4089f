"""Dashboard pages under a realistic load: p95 per page with 100,000 requests in the database.

Seeds a fresh scratch database (PostgreSQL by default) with erasure requests of two clients
through the real intake service (subjects, pseudonyms and first audit events included), spreads
them over 60 days of receipts and a mix of statuses, then signs in to the dashboard in-process and
times every page, as an admin (all clients) and as one client. Prints a table and writes
bench/results/dashboard.json.

    .venv/bin/python bench/dashboard.py                         # 100,000 requests on PostgreSQL
    .venv/bin/python bench/dashboard.py --requests 5000 --views 30
    .venv/bin/python bench/dashboard.py --database-url ''        # a SQLite file instead
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import uuid
from pathlib import Path

from _common import RESULTS, finish_machine, machine, markdown_table, write_json

from app.db import create_scratch_database, drop_database

STATUS_MIX = ["received"] * 30 + ["approved"] * 5 + ["on_hold"] * 5 + ["completed"] * 45 + ["denied"] * 8 + \
    ["cancelled"] * 4 + ["processing"] * 2 + ["failed"] * 1
CHUNK = 1000


def seed(count: int) -> tuple[str, str, str]:
    """`count` requests (80 % client acme, 20 % beta); returns (admin key, acme key, one acme request id)."""
    from sqlalchemy import text

    from app.db import session_scope
    from app.keys import service as key_service
    from app.keys.service import Principal
    from app.requests import service as request_service
    from app.requests.schemas import ErasureRequestCreate

    with session_scope() as session:
        _k, admin = key_service.create_key(session, "bench-admin", ["admin"], client="ops")
        acme_key, acme = key_service.create_key(session, "bench-acme", ["requests:read", "requests:review"], client="acme")
    principals = {name: Principal(str(uuid.uuid4()), name, name, frozenset({"requests:write"})) for name in ("acme", "beta")}
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        client = "beta" if (start // CHUNK) % 5 == 4 else "acme"
        payloads = [ErasureRequestCreate.model_validate({
            "subject": {"identifiers": {"email": f"person-{start + i}@example.org"}},
            "jurisdiction": "ccpa" if (start + i) % 3 == 0 else "gdpr", "source": ("portal", "admin", "batch")[(start + i) % 3],
            "external_id": f"ext-{start + i:07d}",
        }) for i in range(size)]
        with session_scope() as session:
            request_service.create_many(session, principals[client], payloads)
    with session_scope() as session:
        # A spread of receipts over 60 days (so some are overdue) and of statuses, set in SQL:
        # replaying 100,000 reviews through the service would only time the seeding.
        statuses = "ARRAY[" + ",".join(f"'{s}'" for s in STATUS_MIX) + "]"
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(text(
                "UPDATE erasure_requests SET received_at = now() - (random() * interval '60 days'), "
                f"status = ({statuses})[1 + floor(random() * {len(STATUS_MIX)})::int]"))
            session.execute(text("UPDATE erasure_requests SET due_at = received_at + interval '30 days'"))
        else:
            for index, status in enumerate(STATUS_MIX):
                session.execute(text(
                    "UPDATE erasure_requests SET status = :status, received_at = datetime('now', printf('-%d minutes', abs(random()) % 86400)) "
                    "WHERE (abs(random()) % :n) = :i"), {"status": status, "n": len(STATUS_MIX), "i": index})
        request_id = session.execute(text(
            "SELECT id FROM erasure_requests WHERE client = 'acme' ORDER BY received_at DESC LIMIT 1")).scalar()
    _vacuum()
    return admin, acme, str(uuid.UUID(str(request_id)))


def _vacuum() -> None:
    """The state autovacuum keeps a live database in: statistics and a visibility map (which lets
    counts read an index alone). VACUUM cannot run in a transaction, hence autocommit."""
    from app.db import get_engine

    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def time_pages(app, plaintext: str, request_id: str, views: int) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        form = client.get("/admin/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        signed_in = client.post("/admin/login", data={"api_key": plaintext, "csrf_token": token}, follow_redirects=False)
        assert signed_in.status_code == 303
        first = client.get("/admin/requests").text
        cursor = re.search(r"cursor=([^\"&]+)", first).group(1)
        pages = {
            "overview": "/admin", "requests": "/admin/requests", "requests, next page": f"/admin/requests?cursor={cursor}",
            "requests, status received": "/admin/requests?status=received",
            "requests, overdue": "/admin/requests?overdue=yes", "requests, due in 7 days": "/admin/requests?due_within_days=7",
            "requests, search external_id": "/admin/requests?q=ext-0000042",
            "requests, ccpa + dates": "/admin/requests?jurisdiction=ccpa&received_from=2020-01-01",
            "request detail": f"/admin/requests/{request_id}", "request live fragment": f"/admin/requests/{request_id}/live",
        }
        results = {}
        for name, path in pages.items():
            assert client.get(path).status_code == 200, path  # warm-up
            samples = []
            for _ in range(views):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, path
            results[name] = {"p50_ms": p(samples, 0.5), "p95_ms": p(samples, 0.95), "max_ms": round(max(samples), 2)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server for the scratch database ('' for a SQLite file)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--views", type=int, default=50, help="timed views of each page")
    parser.add_argument("--output", default=str(RESULTS / "dashboard.json"))
    args = parser.parse_args()
    import os

    info = machine()
    with tempfile.TemporaryDirectory(prefix="obliviate-bench-") as tmp:
        scratch = None
        if args.database_url:
            url, scratch = create_scratch_database(args.database_url, "obliviate_bench")
        else:
            url = f"sqlite:///{Path(tmp) / 'obliviate.db'}"
        os.environ.update(OBLIVIATE_DATA_DIR=tmp, OBLIVIATE_DATABASE_URL=url, OBLIVIATE_LOG_LEVEL="WARNING",
                          OBLIVIATE_SECRET_KEY="bench-k7Qm2vX9LpT4rw8ZnB1c6F3hJd5G0sYe")
        from app import config, db, migrate
        from app.main import create_app

        config.reset_settings()
        db.dispose_engine()
        try:
            migrate.upgrade(url)
            started = time.perf_counter()
            admin, acme, request_id = seed(args.requests)
            seed_s = round(time.perf_counter() - started, 1)
            app = create_app()
            viewers = {"admin (all clients)": time_pages(app, admin, request_id, args.views),
                       "client acme": time_pages(app, acme, request_id, args.views)}
        finally:
            db.dispose_engine()
            if scratch:
                drop_database(args.database_url, scratch)
    finish_machine(info)
    database = "postgresql" if args.database_url else "sqlite"
    rows = [[page, viewer, f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['max_ms']:.1f}"]
            for viewer, pages in viewers.items() for page, r in pages.items()]
    print(f"dashboard pages, {args.requests:,} requests on {database}, {args.views} views each (seeded in {seed_s} s)")
    print(markdown_table(["page", "viewer", "p50 ms", "p95 ms", "max ms"], rows))
    write_json(Path(args.output), {"database": database, "requests": args.requests, "views": args.views,
                                   "seed_s": seed_s, "pages": viewers, "machine": info})


if __name__ == "__main__":
    main()
