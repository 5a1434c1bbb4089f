"""Lineage lookup on a large dataset: is `POST /v1/subjects/lookup` an index probe, not a scan?

Builds a generated dataset (default 1,000,000 records of 200,000 subjects, records of a subject
scattered through the file) through the real ingest and dataset service into a fresh database,
registers a SISA model version trained on it (manifest by the shard rule), then times lookups
through the HTTP endpoint in-process. Prints a table and writes bench/results/lineage.json.

    .venv/bin/python bench/lineage.py                       # SQLite file in a temporary folder
    .venv/bin/python bench/lineage.py --database-url postgresql://postgres@127.0.0.1:5432/test
      (a scratch database is created next to the given one and dropped afterwards)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from app.db import create_scratch_database, drop_database  # noqa: E402


def generate(path: Path, rows: int, subjects: int, features: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    owner = rng.permutation(np.arange(rows) % subjects)
    columns = {
        "user_id": pa.array([f"user-{i:07d}" for i in owner.tolist()], pa.string()),
        "label": pa.array(rng.integers(0, 10, rows)),
    }
    for j in range(features):
        columns[f"f{j}"] = pa.array(rng.standard_normal(rows, dtype=np.float32))
    pq.write_table(pa.table(columns), path)


def add_sisa_model(version_id: uuid.UUID, shards: int, slices: int) -> None:
    from app.artifacts.store import get_store
    from app.datasets.ingest import read_version_table
    from app.datasets.models import DatasetVersion
    from app.db import session_scope, utcnow
    from app.lineage.sharding import shard_of
    from app.models.models import Model, ModelVersion

    store = get_store()
    with session_scope() as session:
        version = session.get(DatasetVersion, version_id)
        data = read_version_table(store, version.sha256, columns=["record_id", "subject_key"])
        keys = data.column("subject_key").to_pylist()
        manifest = pa.table({
            "record_id": data.column("record_id"),
            "shard": pa.array([shard_of(k, shards) for k in keys], pa.int64()),
            "slice": pa.array(np.arange(len(keys)) % slices),
        })
        sink = pa.BufferOutputStream()
        pq.write_table(manifest, sink)
        model = Model(client="bench", name="bench-sisa", family="mlp_classifier", dataset_id=version.dataset_id,
                      params={}, sisa={"shards": shards, "slices": slices}, holdout_fraction=0.0, seed=1,
                      current_version=1, created_at=utcnow())
        session.add(model)
        session.flush()
        session.add(ModelVersion(
            model_id=model.id, version=1, dataset_version_id=version.id, family="mlp_classifier", params={}, seed=1,
            shape={}, sisa=model.sisa, manifest_sha256=store.put_bytes(sink.getvalue().to_pybytes()), shards=[],
            sha256="0" * 64, metrics={}, origin={"kind": "training"}, state={}, created_at=utcnow(),
        ))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50), 3), "p95_ms": round(pick(0.95), 3), "p99_ms": round(pick(0.99), 3),
            "mean_ms": round(statistics.fmean(ordered), 3)}


def time_lookups(client, headers, ids: list[str], **extra) -> tuple[list[float], dict]:
    samples, last = [], None
    for raw_id in ids:
        started = time.perf_counter()
        body = {"identifiers": {"user_id": raw_id}, **extra}
        response = client.post("/v1/subjects/lookup", json=body, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        last = response.json()
    return samples, last


def time_service_lookups(ids: list[str]) -> list[float]:
    """The lookup without HTTP: pseudonymise, two indexed queries, shape the answer."""
    from app.db import session_scope
    from app.lineage import service

    samples = []
    with session_scope() as session:
        for raw_id in ids:
            started = time.perf_counter()
            service.lookup(session, None, {"user_id": raw_id})
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(args, workdir: Path, database_url: str) -> dict:
    os.environ.update(
        OBLIVIATE_DATA_DIR=str(workdir / "data"), OBLIVIATE_DATABASE_URL=database_url, OBLIVIATE_LOG_LEVEL="WARNING",
        OBLIVIATE_SECRET_KEY="bench-k7Qm2vX9LpT4rw8ZnB1c6F3hJd5G0sYe",
    )
    from fastapi.testclient import TestClient

    from app import config, db, migrate
    from app.datasets import service
    from app.keys import service as key_service
    from app.main import create_app

    config.reset_settings()
    db.dispose_engine()
    migrate.upgrade(database_url)
    upload = workdir / "upload.parquet"
    started = time.perf_counter()
    generate(upload, args.rows, args.subjects, args.features, args.seed)
    generate_s = time.perf_counter() - started
    with db.session_scope() as session:
        key, plaintext = key_service.create_key(session, "bench", ["requests:review", "models:write"], client="bench")
        principal = key_service.Principal(str(key.id), "bench", "bench", frozenset(["models:write"]))
    started = time.perf_counter()
    with db.session_scope() as session:
        version = service.create_dataset(session, principal, "bench", "user_id", "user_id", "label", None, upload)
        version_id, rows, subjects = version.id, version.rows, version.subjects
    ingest_s = time.perf_counter() - started
    add_sisa_model(version_id, shards=8, slices=4)
    headers = {"Authorization": f"Bearer {plaintext}"}
    rng = np.random.default_rng(args.seed + 1)
    present = [f"user-{i:07d}" for i in rng.integers(0, args.subjects, args.lookups).tolist()]
    absent = [f"nobody-{i}" for i in range(args.lookups)]
    results = {}
    with TestClient(create_app()) as client:
        time_lookups(client, headers, present[:50])  # warm the connection pool and key cache
        samples, last = time_lookups(client, headers, present)
        assert last["datasets"][0]["records"] == args.rows // args.subjects and last["models"][0]["shard"] is not None
        results["present"] = percentiles(samples)
        results["absent"] = percentiles(time_lookups(client, headers, absent)[0])
        started = time.perf_counter()
        time_lookups(client, headers, present[:1], include_slices=True)
        results["slices_first_ms"] = round((time.perf_counter() - started) * 1000, 1)
        samples, last = time_lookups(client, headers, present, include_slices=True)
        assert last["models"][0]["slices"]
        results["slices_warm"] = percentiles(samples)
    results["service"] = percentiles(time_service_lookups(present))
    db.dispose_engine()
    return {"rows": rows, "subjects": subjects, "features": args.features, "generate_s": round(generate_s, 2),
            "ingest_s": round(ingest_s, 2), "lookups": args.lookups, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "lineage.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="obliviate-bench-") as tmp:
        workdir = Path(tmp)
        scratch = None
        if args.database_url:
            url, scratch = create_scratch_database(args.database_url, "obliviate_bench")
        else:
            url = f"sqlite:///{workdir / 'data' / 'obliviate.db'}"
        try:
            result = run(args, workdir, url)
        finally:
            if scratch:
                drop_database(args.database_url, scratch)
    result["database"] = "postgresql" if args.database_url else "sqlite"
    result["machine"] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                         "cores": os.cpu_count(), "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    print_table(result)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(output.read_text()) if output.exists() else {}
    existing[result["database"]] = result
    output.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"\nwrote {output}")


def print_table(r: dict) -> None:
    machine = r["machine"]
    print(f"lineage lookup on {r['database']} ({machine['cores']} cores, Python {machine['python']}, "
          f"load average {machine['load_average_after'][0]})")
    print(f"{'rows':>10} {'subjects':>9} {'ingest s':>9} | {'lookup':<22} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    rows = (("subject present", "present"), ("subject absent", "absent"), ("with slices (warm)", "slices_warm"),
            ("service only, no HTTP", "service"))
    for label, key in rows:
        p = r[key]
        print(f"{r['rows']:>10,} {r['subjects']:>9,} {r['ingest_s']:>9.1f} | {label:<22} "
              f"{p['p50_ms']:>7.2f} {p['p95_ms']:>7.2f} {p['p99_ms']:>7.2f}")
    print(f"first lookup with slices (reads the 1-model manifest): {r['slices_first_ms']} ms")


if __name__ == "__main__":
    main()
