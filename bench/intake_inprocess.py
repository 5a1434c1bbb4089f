"""CPU of the API process per request of intake's PostgreSQL fast path alone, without HTTP.

Calls app/requests/fast_intake.py in this process against a scratch PostgreSQL database
(created, migrated and dropped here): creates with 16 in flight, the same under an
Idempotency-Key each, and batches of 1,000. What it measures is the part that builds the
statement's parameters, runs it through the psycopg pool and renders the answer, so a change
there shows without the HTTP stack's and the load generator's share (bench/intake.py). Process
CPU time moves less with other work on the machine than requests per second do; run it in turn
with the code to compare on the same host.

    PYTHONPATH=$PWD .venv/bin/python bench/intake_inprocess.py [-n 3000] [--out bench/results/x.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.db import create_scratch_database, drop_database

SECRET = "bench-intake-secret-0123456789abcdef-0123456789abcdef"
# The identifier kinds the benched client may name (its requests carry a user_id beside the e-mail).
KNOWN = frozenset({"email", "phone", "user_id"})


def payload(external_id: bool = True) -> dict:
    return {
        "subject": {"identifiers": {"email": f"p-{uuid.uuid4().hex[:10]}@example.org", "user_id": uuid.uuid4().hex}},
        "jurisdiction": "gdpr", "source": "portal", "external_id": f"x-{uuid.uuid4().hex}" if external_id else None,
    }


async def measure(n: int, batches: int) -> dict:
    from app import asyncdb
    from app.keys.service import Principal
    from app.requests import fast_intake
    from app.requests.schemas import ErasureRequestCreate

    principal = Principal("00000000-0000-0000-0000-0000000000ab", "bench", "bench", frozenset({"requests:write"}))
    results = {}
    for label, keyed in (("create, 16 in flight", False), ("create under an Idempotency-Key, 16 in flight", True)):
        payloads = [ErasureRequestCreate.model_validate(payload()) for _ in range(n + n // 10)]
        in_flight = asyncio.Semaphore(16)

        async def one(sent, in_flight=in_flight, keyed=keyed):
            async with in_flight:
                answer = await fast_intake.create_one(principal, sent, uuid.uuid4().hex if keyed else None)
                assert answer is not None and answer.status_code == 201  # the fast path answered

        await asyncio.gather(*(one(sent) for sent in payloads[n:]))  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(sent) for sent in payloads[:n]))
        results[label] = {"items": n, "cpu_us_per_item": round((time.process_time() - cpu) / n * 1e6),
                          "wall_us_per_item": round((time.perf_counter() - wall) / n * 1e6)}
    await fast_intake.create_batch(principal, [payload() for _ in range(1000)], KNOWN)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        answer = await fast_intake.create_batch(principal, [payload() for _ in range(1000)], KNOWN)
        assert answer is not None and answer.status_code == 200
    items = batches * 1000
    results["batch of 1,000"] = {"items": items, "cpu_us_per_item": round((time.process_time() - cpu) / items * 1e6),
                                 "wall_us_per_item": round((time.perf_counter() - wall) / items * 1e6)}
    await asyncdb.close_pools()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="creates per level")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    database_url, name = create_scratch_database(args.admin_url, "obliviate_intake_inprocess")
    os.environ.update(OBLIVIATE_DATABASE_URL=database_url, OBLIVIATE_SECRET_KEY=SECRET,
                      OBLIVIATE_DATA_DIR=tempfile.mkdtemp(prefix="intake-inprocess-"), OBLIVIATE_LOG_LEVEL="WARNING")
    load_start = os.getloadavg()
    try:
        from app import config, db, migrate

        config.reset_settings()
        db.dispose_engine()
        migrate.upgrade(database_url)
        results = asyncio.run(measure(args.n, args.batches))
    finally:
        from app import db

        db.dispose_engine()
        drop_database(args.admin_url, name)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    print("| level | items | API process CPU µs/item | wall µs/item |\n|---|---|---|---|")
    for label, row in results.items():
        print(f"| {label} | {row['items']} | {row['cpu_us_per_item']} | {row['wall_us_per_item']} |")
    document = {
        "command": " ".join(["python", *sys.argv]), "commit": commit,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
