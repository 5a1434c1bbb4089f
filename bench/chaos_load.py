"""What the chaos run does to the service: the data set and the model it trains first, the
clients that submit and review erasure requests, and the faults injected meanwhile."""

from __future__ import annotations

import asyncio
import io
import random
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

SUBJECTS = 120  # subjects in the trained model ("u0000" …); every other request names nobody we hold
ROWS_PER_SUBJECT = 5
FEATURES = 8
# Enough epochs that a job outlives its first heartbeat (which publishes its pid to the faults).
MODEL_PARAMS = {"hidden": [8], "epochs": 150, "learning_rate": 0.05, "batch_size": 64}
FAULTS = ("kill_worker_child", "kill_worker_main", "term_worker", "restart_redis", "pause_redis", "restart_postgres",
          "kill_api_connections")


def subject_id(index: int) -> str:
    return f"u{index:04d}"


def dataset_csv(seed: int) -> bytes:
    """Three separable classes with a few flipped labels, several rows per subject."""
    rng = np.random.default_rng(seed)
    rows = SUBJECTS * ROWS_PER_SUBJECT
    labels = rng.integers(0, 3, rows)
    centres = rng.normal(0, 3, (3, FEATURES))
    features = centres[labels] + rng.normal(0, 1, (rows, FEATURES))
    labels[rng.random(rows) < 0.05] = rng.integers(0, 3)
    out = io.StringIO()
    out.write("user_id,label," + ",".join(f"f{j}" for j in range(FEATURES)) + "\n")
    for i in range(rows):
        values = ",".join(f"{x:.4f}" for x in features[i])
        out.write(f"{subject_id(i // ROWS_PER_SUBJECT)},{labels[i]},{values}\n")
    return out.getvalue().encode()


def train_model(api: str, admin: dict, seed: int, timeout: float = 300) -> dict:
    with httpx.Client(base_url=api, headers=admin, timeout=30) as client:
        form = {"name": "chaos", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "label"}
        upload = client.post("/v1/datasets", data=form, files={"file": ("chaos.csv", dataset_csv(seed), "text/csv")})
        upload.raise_for_status()
        body = {"name": "chaos-mlp", "family": "mlp_classifier", "dataset_id": upload.json()["dataset_id"],
                "holdout_fraction": 0.2, "params": MODEL_PARAMS, "seed": seed}
        created = client.post("/v1/models", json=body)
        created.raise_for_status()
        job_id = created.json()["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed"):
                if job["status"] == "failed":
                    raise RuntimeError(f"training failed: {job.get('error')}")
                return job
            time.sleep(0.5)
    raise RuntimeError("training did not finish in time")


class GaveUp(Exception):
    """A client could not get an answer before its deadline."""


@dataclass
class LoadResult:
    acknowledged: dict[str, dict] = field(default_factory=dict)  # request id → the first 2xx body
    existing_subjects: dict[str, str] = field(default_factory=dict)  # request id → raw subject id we hold
    unkeyed: int = 0  # creates sent without an Idempotency-Key (their external_id makes retries safe)
    replays: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    conflicts: int = 0
    conflict_mismatches: list[str] = field(default_factory=list)
    approved: int = 0
    denied: int = 0
    gave_up: list[str] = field(default_factory=list)
    retries: Counter = field(default_factory=Counter)  # what made a client retry: status codes, exceptions
    seconds: float = 0.0


class Load:
    """Clients that submit, replay and review erasure requests at a steady rate, retrying every
    call that got no definite answer, as a privacy portal would."""

    def __init__(self, api: str, writer: dict, *, requests: int, clients: int, rate: float, seed: int, deadline: float,
                 existing_fraction: float = 0.08, replay_fraction: float = 0.10, conflict_fraction: float = 0.02,
                 deny_fraction: float = 0.03, unkeyed_fraction: float = 0.5):
        self.api, self.writer, self.requests, self.clients, self.rate = api, writer, requests, clients, rate
        self.rng = random.Random(seed)
        self.seed, self.deadline = seed, deadline
        self.existing_fraction, self.replay_fraction = existing_fraction, replay_fraction
        self.conflict_fraction, self.deny_fraction = conflict_fraction, deny_fraction
        self.unkeyed_fraction = unkeyed_fraction
        self.result = LoadResult()

    def plan(self, index: int) -> dict:
        rng = self.rng
        existing = rng.random() < self.existing_fraction
        raw = subject_id(rng.randrange(SUBJECTS)) if existing else f"nobody-{self.seed}-{index}"
        body = {"subject": {"identifiers": {"user_id": raw}}, "jurisdiction": rng.choice(["gdpr", "ccpa"]),
                "source": rng.choice(["portal", "admin", "batch"])}
        if rng.random() < 0.5:
            body["external_id"] = f"chaos-{self.seed}-{index}"
        roll = rng.random()
        # Some requests with an external_id go without an Idempotency-Key, as a portal that
        # relies on its own ticket ids would send them; on PostgreSQL they take the intake's
        # fast path (app/requests/fast_intake.py), so faults meet both paths.
        unkeyed = "external_id" in body and rng.random() < self.unkeyed_fraction
        return {"index": index, "body": body, "key": None if unkeyed else str(uuid.uuid4()),
                "existing": raw if existing else None,
                "replay": not unkeyed and roll < self.replay_fraction,
                "conflict": not unkeyed and self.replay_fraction <= roll < self.replay_fraction + self.conflict_fraction,
                "deny": rng.random() < self.deny_fraction}

    async def _call(self, client: httpx.AsyncClient, path: str, *, json=None, key: str | None = None,
                    final: frozenset = frozenset()) -> httpx.Response:
        """Retry until a definite answer: 2xx, a 4xx other than 409/429, or a status in `final`."""
        headers = {**self.writer, **({"Idempotency-Key": key} if key else {})}
        delay = 0.1
        while True:
            try:
                response = await client.post(path, json=json, headers=headers)
                code = response.status_code
                if code in final or (code < 500 and code not in (409, 429)):
                    return response
                self.result.retries[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                self.result.retries[type(exc).__name__] += 1
            if time.monotonic() > self.deadline:
                raise GaveUp(path)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    async def one(self, client: httpx.AsyncClient, item: dict) -> None:
        result = self.result
        result.unkeyed += item["key"] is None
        created = await self._call(client, "/v1/erasure-requests", json=item["body"], key=item["key"])
        if created.status_code not in (200, 201):
            result.gave_up.append(f"#{item['index']}: create answered {created.status_code}")
            return
        body = created.json()
        result.acknowledged[body["id"]] = body
        if item["existing"]:
            result.existing_subjects[body["id"]] = item["existing"]
        if item["replay"]:
            result.replays += 1
            again = await self._call(client, "/v1/erasure-requests", json=item["body"], key=item["key"])
            if again.status_code != created.status_code or again.json() != body:
                result.replay_mismatches.append(f"#{item['index']}: {again.status_code}")
        if item["conflict"]:
            result.conflicts += 1
            other = {**item["body"], "subject": {"identifiers": {"user_id": f"other-{item['index']}"}}}
            reused = await self._call(client, "/v1/erasure-requests", json=other, key=item["key"])
            if reused.status_code != 422:
                result.conflict_mismatches.append(f"#{item['index']}: {reused.status_code}")
        action = "deny" if item["deny"] else "approve"
        review = await self._call(client, f"/v1/erasure-requests/{body['id']}/{action}",
                                  json={"reason": "identity could not be verified"} if item["deny"]
                                  else {"override_reason": "Identity confirmed by the privacy team."},
                                  final=frozenset({409}))
        moved_on = review.status_code == 409 and review.json().get("current_status") != "received"
        if review.status_code == 200 or moved_on:
            # 409: an earlier try of ours was applied but its answer was lost; the request moved on.
            if item["deny"]:
                result.denied += 1
            else:
                result.approved += 1
        else:
            result.gave_up.append(f"#{item['index']}: {action} answered {review.status_code}")

    async def run(self) -> LoadResult:
        items = [self.plan(i) for i in range(self.requests)]
        queue: asyncio.Queue = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        started = time.monotonic()
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)

        async def client_loop(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                item = queue.get_nowait()
                wait = started + item["index"] / self.rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    await self.one(client, item)
                except GaveUp as exc:
                    self.result.gave_up.append(f"#{item['index']}: no answer from {exc} before the deadline")

        async with httpx.AsyncClient(base_url=self.api, timeout=20, limits=limits) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(self.clients)))
        self.result.seconds = time.monotonic() - started
        return self.result


class FaultInjector(threading.Thread):
    """One random fault every fault_min..fault_max seconds until the load is done and at least
    min_faults were injected. Every target is a pid of a process the cluster started."""

    def __init__(self, cluster, *, seed: int, fault_min: float, fault_max: float, min_faults: int, pause_seconds: float,
                 log):
        super().__init__(name="faults", daemon=True)
        self.cluster, self.rng, self.log = cluster, random.Random(seed), log
        self.fault_min, self.fault_max, self.min_faults = fault_min, fault_max, min_faults
        self.pause_seconds = pause_seconds
        self.load_done = threading.Event()
        self.stop = threading.Event()
        self.injected: list[dict] = []
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(self.fault_min, self.fault_max)):
            kind = self.rng.choice(FAULTS)
            entry = {"at_s": round(time.monotonic() - self.started, 1), "kind": kind}
            try:
                entry["target"] = getattr(self, kind)()
            except Exception as exc:  # a fault that could not be applied is reported, never fatal
                entry["error"] = f"{type(exc).__name__}: {exc}"
            self.injected.append(entry)
            self.log(f"fault {len(self.injected)}: {entry}")
            if self.load_done.is_set() and len(self.injected) >= self.min_faults:
                return

    def _busy_worker(self, patience: float = 5.0) -> tuple[str, int | None, bool]:
        """A worker and its pool process that is running a job, waiting a few seconds for one:
        killing an idle process proves little. Otherwise any worker."""
        deadline = time.monotonic() + patience
        while True:
            busy = set(self.cluster.busy_pids())
            for name in self.rng.sample(["worker-1", "worker-2"], 2):
                for pid in self.cluster.children(name):
                    if pid in busy:
                        return name, pid, True
            if time.monotonic() > deadline or self.stop.is_set():
                break
            time.sleep(0.25)
        name = self.rng.choice(["worker-1", "worker-2"])
        children = self.cluster.children(name)
        return name, self.rng.choice(children) if children else None, False

    def kill_worker_child(self) -> str:
        name, pid, busy = self._busy_worker()
        if pid is None:
            return self.kill_worker_main()
        self.cluster.kill_pid(pid, signal.SIGKILL)
        return f"{name} pool process {pid}{' running a job' if busy else ''}"

    def kill_worker_main(self) -> str:
        name, _, busy = self._busy_worker()
        pid = self.cluster.processes[name].pid
        self.cluster.kill_pid(pid, signal.SIGKILL)
        self.cluster.processes[name].wait(timeout=10)
        self.cluster.start_worker(name)
        return f"{name} main process {pid}{' (its pool process was running a job)' if busy else ''}"

    def term_worker(self) -> str:
        name, _, busy = self._busy_worker()
        process = self.cluster.processes[name]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)  # a warm shutdown finishes the task in hand first
        except Exception:
            self.cluster.kill_group(process.pid)
            process.wait(timeout=10)
        self.cluster.start_worker(name)
        return f"{name} main process {process.pid}{' (warm shutdown during a job)' if busy else ''}"

    def restart_redis(self) -> str:
        pid = self.cluster.processes["redis"].pid
        self.cluster.restart_redis()
        return f"redis {pid}"

    def pause_redis(self) -> str:
        pid = self.cluster.processes["redis"].pid
        self.cluster.pause_redis(self.pause_seconds)
        return f"redis {pid} for {self.pause_seconds:.0f}s"

    def restart_postgres(self) -> str:
        pid = self.cluster.postgres_pid()
        self.cluster.restart_postgres()
        return f"postgres {pid}"

    def kill_api_connections(self) -> str:
        return f"{self.cluster.terminate_api_connections()} API connections"
