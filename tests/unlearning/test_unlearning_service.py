"""The unlearning job's typed backbone (app/unlearning/service.py, app/unlearning/types.py): the
steps answer frozen records, write job.result in the shape the certificates read, and the
app-side destruction keeps bytes a live version of another client references."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from tests.dataset_files import FEATURES, subject_id
from tests.objects import approve, create_dataset, import_model

SCOPES = "requests:write,requests:read,requests:review,models:write,models:read"
ERASED = subject_id(1)  # records 36-71: among the 100 records the imported weights were trained on


def _approve(client, headers, raw: str = ERASED) -> str:
    body = {"subject": {"identifiers": {"user_id": raw}}, "jurisdiction": "gdpr", "source": "admin"}
    created = client.post("/v1/erasure-requests", json=body, headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert approve(client, headers, request_id).status_code == 200
    return request_id


def _planned_job() -> uuid.UUID:
    """Plan the approved requests and open the batch window of the one unlearning job."""
    from app.db import session_scope, utcnow
    from app.jobs.models import Job
    from app.unlearning import planner

    with session_scope() as session:
        planner.plan_approved(session)
        (job,) = session.scalars(select(Job).where(Job.kind == "unlearning", Job.status == "queued")).all()
        job.not_before = utcnow()
        return job.id


@pytest.fixture
def alpha(client, make_key, settings_env):
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0")
    headers = make_key(SCOPES, client="alpha")
    dataset = create_dataset(client, headers)
    model = import_model(client, headers, dataset["id"], name="typed")
    return headers, dataset, model


def test_typed_records_write_the_keys_job_results_and_certificates_carry():
    from app.unlearning.types import (
        DatasetErasure,
        Escalation,
        Figures,
        LineageProof,
        SampledReference,
        SetFigures,
        Shard,
        Verification,
    )

    figures = Figures(SetFigures(1.0, 0.01, 18), SetFigures(0.99, 0.02, 500), SetFigures(0.9, 0.3, 60), 0.52)
    verification = Verification(figures, Figures(SetFigures(0.8, 0.5, 18), figures.retain, figures.holdout, 0.49),
                                LineageProof(18, 0), True)
    as_json = verification.to_json()
    assert list(as_json) == ["before", "after", "lineage_proof", "holdout_available"]
    assert list(as_json["after"]) == ["forget", "retain", "holdout", "mia_auc"]
    assert as_json["after"]["forget"] == {"accuracy": 0.8, "loss": 0.5, "n": 18}
    assert as_json["lineage_proof"] == {"forget_records": 18, "in_new_manifest": 0}
    assert Verification.from_json(as_json) == verification
    # Without a holdout the sampled reference is carried, under its historical key.
    sampled = Verification(figures, figures, LineageProof(3, 0), False, SampledReference(0.5, 0.7, 4000))
    assert sampled.to_json()["reference"] == {"forget_accuracy": 0.5, "forget_loss": 0.7, "retain_sample": 4000}
    assert Verification.from_json(sampled.to_json()) == sampled

    assert Escalation("finetune", "retrain", ("AUC too high",)).to_json() == {
        "from": "finetune", "to": "retrain", "reasons": ["AUC too high"]}
    shard = Shard(2, "a" * 64, ("b" * 64, "c" * 64))
    assert list(shard.to_json()) == ["shard", "weights", "checkpoints"]
    assert Shard.from_json(shard.to_json()) == shard
    assert Shard.from_json({"shard": 0, "weights": "d" * 64, "checkpoints": []}).checkpoints == ()
    # The shard's training records travel with it; a version written before has none (None).
    counted = Shard(1, "a" * 64, (), records=0)
    assert counted.to_json()["records"] == 0 and Shard.from_json(counted.to_json()) == counted
    assert Shard.from_json({"shard": 0, "weights": "d" * 64, "checkpoints": []}).records is None
    erasure = DatasetErasure(uuid.uuid4(), "digits", 1, "e" * 64, 2, "f" * 64, 36, 1, uuid.uuid4(), ("k",))
    assert list(erasure.to_json()) == ["dataset_id", "name", "version_before", "sha256_before", "version_after",
                                       "sha256_after", "rows_removed", "subjects_removed"]
    with pytest.raises(AttributeError):
        erasure.name = "other"  # frozen: a step cannot change what an earlier one answered


def test_the_steps_answer_typed_records_and_write_job_result(client, alpha):
    from app.db import session_scope
    from app.jobs import service as job_service
    from app.jobs.models import Job
    from app.models.models import ModelVersion
    from app.pseudonym import subject_key
    from app.unlearning import service
    from app.unlearning.types import JobAttempt, Shard, Verification
    from workers import unlearning
    from workers.jobs import JobContext

    headers, dataset, model = alpha
    request_id = _approve(client, headers)
    job_id = _planned_job()
    with session_scope() as session:
        number = job_service.claim(session, job_id, 60)
    attempt = JobAttempt(job_id=job_id, attempt=number, lease_seconds=60)

    with session_scope() as session:
        plan = service.start(session, attempt)
    assert plan is not None
    assert plan.request_ids == (uuid.UUID(request_id),) and plan.client == "alpha"
    assert plan.pairs == (("user_id", subject_key("user_id", ERASED)),)
    # Each request's own subjects, so a batch's requests are verified one by one.
    assert plan.request_pairs == (plan.pairs,)
    assert plan.request_keys([plan.pairs[0][1], "another"]) == ((request_id, (plan.pairs[0][1],)),)
    assert plan.model_id == uuid.UUID(model["id"]) and plan.dataset_id == uuid.UUID(dataset["dataset_id"])

    with session_scope() as session:
        erasure = service.erase_dataset(session, attempt, plan)
    assert (erasure.version_before, erasure.version_after, erasure.rows_removed, erasure.subjects_removed) == (1, 2, 36, 1)
    assert erasure.keys == (plan.pairs[0][1],) and erasure.sha256_before == dataset["sha256"]
    with session_scope() as session:
        again = service.erase_dataset(session, attempt, plan)  # a retried step finds its own version
        stored = job_service.result_of(session, job_id)
    assert again == erasure
    assert stored == {"requests": [request_id], "dataset": {**erasure.to_json(), "destroyed": []}}

    with session_scope() as session:
        snapshot = service.snapshot_model(session, attempt, plan, erasure)
        current = session.scalars(select(ModelVersion).where(ModelVersion.model_id == plan.model_id)).one()
        assert snapshot is not None
        assert snapshot.old_shards == tuple(Shard.from_json(s) for s in current.shards)
        assert snapshot.manifest_sha == current.manifest_sha256 and snapshot.shape.to_json() == current.shape
    assert snapshot.holds and snapshot.same_lineage and snapshot.method == "retrain"
    assert snapshot.family == "logistic_regression" and snapshot.version_before == 1 and snapshot.sisa is None
    assert snapshot.new_dataset_version_id == erasure.version_id and snapshot.features == tuple(FEATURES)

    # The worker finishes the job from where the steps above left it (each step repeats safely).
    with JobContext(job_id, number, 60) as context:
        unlearning.run(context)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "completed"
        result = job.result
        versions = {v.version: v for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == plan.model_id))}
        assert service.snapshot_model(session, attempt, plan, erasure) is None  # promoted: nothing to redo
    entry = result["model"]
    assert list(entry) == ["model", "model_id", "version_before", "sha256_before", "version_after", "sha256_after",
                           "method", "requested_method", "escalations", "details", "verification", "destroyed"]
    assert Verification.from_json(entry["verification"]).to_json() == entry["verification"]
    assert versions[2].metrics == {"verification": entry["verification"]} and versions[2].sha256 == entry["sha256_after"]
    assert versions[1].destroyed_at is not None
    assert [d["version"] for d in entry["destroyed"]] == [1] and [d["version"] for d in result["dataset"]["destroyed"]] == [1]
    certificate = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=headers).json()["certificate"]
    # A retrain is exact: format 3 keeps its figures as the sanity check, beside what makes it exact.
    assert certificate["models"][0]["method_kind"] == "exact"
    assert certificate["models"][0]["sanity_check"] == entry["verification"]
    assert certificate["models"][0]["exact"]["dataset_version_without_records"]["sha256"] == erasure.sha256_after
    assert certificate["datasets"][0]["sha256_after"] == erasure.sha256_after


def test_the_destruction_keeps_bytes_a_live_version_of_another_client_uses(client, make_key, alpha):
    from app.artifacts.store import get_store
    from app.db import session_scope
    from app.jobs.models import Job
    from app.models.models import ModelVersion
    from app.unlearning import service
    from workers import jobs

    headers, dataset, model = alpha
    beta = make_key(SCOPES, client="beta")
    beta_model = import_model(client, beta, create_dataset(client, beta)["id"], name="typed")
    with session_scope() as session:
        (alpha_version,) = session.scalars(select(ModelVersion).where(ModelVersion.model_id == uuid.UUID(model["id"])))
        shared = {dataset["sha256"], alpha_version.manifest_sha256, alpha_version.shards[0]["weights"]}
        # Only the app's composition sees a model version's shard hashes as live.
        assert service.live_references(session, sorted(shared | {"0" * 64})) == shared

    _approve(client, headers)
    job_id = _planned_job()
    assert jobs.execute(str(job_id)) == "completed"
    store = get_store()
    with session_scope() as session:
        result = session.get(Job, job_id).result
        assert session.get(ModelVersion, alpha_version.id).destroyed_at is not None
        assert service.live_references(session, sorted(shared)) == shared  # beta's live version and dataset
        assert service.schedule_unreferenced(session, sorted(shared)) == []
    assert not shared & set(result["artifacts_to_delete"]), result["artifacts_to_delete"]
    assert result["model"]["destroyed"][0]["artifacts"] == []
    assert all(store.exists(sha) for sha in shared)
    assert client.get("/v1/models/typed/versions/1/weights", headers=beta).status_code == 200, beta_model


def _stored_ledger(request_id: str, dataset_id: str, model_id: str) -> dict:
    """A job's result as the release before the typed ledger wrote it, after its destruction step."""
    return {
        "requests": [request_id],
        "dataset": {
            "dataset_id": dataset_id, "name": "churn", "version_before": 1, "sha256_before": "a" * 64,
            "version_after": 2, "sha256_after": "b" * 64, "rows_removed": 36, "subjects_removed": 1,
            "destroyed": [{"version": 1, "sha256": "a" * 64, "artifacts": ["a" * 64]}],
        },
        "model": {
            "model": "typed", "model_id": model_id, "version_before": 1, "sha256_before": "c" * 64,
            "version_after": 2, "sha256_after": "d" * 64, "method": "finetune", "requested_method": "finetune",
            "escalations": [], "details": {"epochs": 3}, "verification": {"holdout_available": True},
            "destroyed": [{"version": 1, "sha256": "c" * 64, "artifacts": ["c" * 64]}],
            "method_settings": {"method": "finetune", "settings": {"epochs": 3}, "source": "defaults", "rehearsal_id": None},
            "destroyed_references": [{"id": "r", "position": 0, "generation": 1, "sha256": "e" * 64, "artifacts": []}],
        },
        "artifacts_to_delete": ["a" * 64, "c" * 64],
    }


def test_the_ledger_reads_and_writes_the_stored_shape_key_for_key():
    from app.unlearning.ledger import JobLedger

    stored = _stored_ledger(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
    ledger = JobLedger.from_json(stored)
    assert ledger.requests == tuple(stored["requests"]) and ledger.artifacts_to_delete == ("a" * 64, "c" * 64)
    assert ledger.to_json() == stored
    assert list(ledger.to_json()) == list(stored) and list(ledger.to_json()["model"]) == list(stored["model"])
    # A key a later release adds survives a step of this one.
    assert JobLedger.from_json({**stored, "later": {"x": 1}}).serving([]).to_json()["later"] == {"x": 1}
    assert JobLedger.from_json(None).to_json() == {}
    assert JobLedger.without_requests().to_json() == {"requests": [], "note": "no live requests"}

    more = ledger.with_destroyed(artifacts=["0" * 64, "a" * 64], model_versions=[{"version": 2}], references=[],
                                 dataset_versions=[{"version": 2}])
    assert more.artifacts_to_delete == ("0" * 64, "a" * 64, "c" * 64)
    assert [d["version"] for d in more.to_json()["model"]["destroyed"]] == [1, 2]
    assert [d["version"] for d in more.to_json()["dataset"]["destroyed"]] == [1, 2]
    assert len(more.to_json()["model"]["destroyed_references"]) == 1
    assert ledger.to_json() == stored  # the record is frozen: the step made a new one


def test_the_ledger_keeps_the_no_op_control_under_its_own_key():
    from app.unlearning.ledger import JobLedger

    stored = _stored_ledger(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
    assert JobLedger.from_json(stored).no_op_control is None
    control = {"verdict": "fail", "testable": True, "checks": [{"name": "mia_auc", "verdict": "fail"}]}
    written = JobLedger.from_json(stored).with_no_op_control(control).to_json()
    assert written["no_op_control"] == control and {k: v for k, v in written.items() if k != "no_op_control"} == stored
    # Read back by any later step, and kept through the steps that write other parts.
    again = JobLedger.from_json(written)
    assert again.no_op_control == control and again.serving([]).to_json()["no_op_control"] == control


def test_a_job_an_earlier_release_left_half_way_completes_and_certifies(client, alpha):
    from app.db import session_scope
    from app.jobs import service as job_service
    from app.jobs.models import Job
    from app.unlearning import service
    from app.unlearning.types import JobAttempt

    headers, dataset, model = alpha
    request_id = _approve(client, headers)
    job_id = _planned_job()
    with session_scope() as session:
        attempt = JobAttempt(job_id=job_id, attempt=job_service.claim(session, job_id, 60), lease_seconds=60)
    with session_scope() as session:
        assert service.start(session, attempt) is not None
    stored = _stored_ledger(request_id, dataset["dataset_id"], model["id"])
    with session_scope() as session:  # what the earlier release had committed when its worker died
        job_service.fenced(session, job_id, attempt.attempt, result=stored)
    with session_scope() as session:
        service.complete(session, attempt)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "completed" and job.result == stored
    assert client.get(f"/v1/erasure-requests/{request_id}", headers=headers).json()["outcome"] == "erased"
    certificate = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=headers).json()["certificate"]
    assert certificate["datasets"] == [{**stored["dataset"], "job_id": str(job_id)}]
    # Format 3 adds the method's kind and the request's verdict (none: this release's ledger had no
    # statistical verdicts) to the entry as stored.
    assert certificate["models"] == [{**stored["model"], "job_id": str(job_id), "method_kind": "approximate",
                                      "verdict": None}]
