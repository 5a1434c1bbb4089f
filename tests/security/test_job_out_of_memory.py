"""A job whose worker dies is not retried blindly (issue 20, item 1): the kernel's out-of-memory
killer ends a worker with SIGKILL, without a heartbeat, and a job that did so twice would do it to
every worker it is retried on. A real Celery worker process is killed the same way here."""

from __future__ import annotations

import pytest

from tests.dataset_files import digits_table, parquet_bytes, upload
from tests.worker import Worker, wait_for

LEASE_SECONDS = "3"


@pytest.fixture
def short_lease_worker(database_url, tmp_path):
    process = Worker(tmp_path / "worker.log", extra_env={"OBLIVIATE_JOB_LEASE_SECONDS": LEASE_SECONDS},
                     queues="default,unlearning", beat=True).start()
    yield process
    process.stop()


def test_a_job_whose_worker_is_killed_twice_fails_as_out_of_memory(client, make_key, short_lease_worker):
    headers = make_key("models:write,models:read")
    dataset = upload(client, headers, parquet_bytes(digits_table())).json()
    body = {"name": "memory-hungry", "family": "mlp_classifier", "dataset_id": dataset["dataset_id"],
            "params": {"hidden": [256, 256], "epochs": 2000, "batch_size": 64}}
    created = client.post("/v1/models", json=body, headers=headers)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def job():
        return client.get(f"/v1/jobs/{job_id}", headers=headers).json()

    for attempt in (1, 2):
        def holder(attempt=attempt):
            current = job()
            assert current["status"] in ("queued", "running"), current
            return (current["status"] == "running" and current["attempt"] == attempt
                    and current["progress"].get("attempt") == attempt and current["progress"].get("pid"))

        pid = wait_for(holder, 180, what=f"attempt {attempt} to run")
        assert short_lease_worker.kill(pid), "the job's process is not one of the worker's"

    failed = wait_for(lambda: (lambda j: j if j["status"] == "failed" else None)(job()), 120, what="the job to fail")
    assert failed["error"].startswith("worker died, likely out of memory"), failed
    assert failed["attempt"] == 2 < failed["max_attempts"]
