"""Statistical verdicts in unlearning jobs: the verification block in the job, the certificate
and the request; escalation of inconclusive and failed approximate results with the reason;
exact methods that record verdicts without escalating; reference models destroyed with the
subjects they held and refilled by their own job."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.dataset_files import artifact_files
from tests.factories import (
    LAX,
    batch_request,
    erase_in_process,
    model_version,
    seen_subjects,
    train_in_process,
    trained_subjects,
)
from tests.worker import execute_queued, plan_approved
from workers.engine.verification.control import NO_POWER

pytestmark = pytest.mark.usefixtures("held_batches")
BLOCK_FIELDS = {"verdict", "alpha", "reasons", "checks", "attacks", "records", "reference", "epsilon_lower_bound",
                "escalates", "method", "exact", "tolerances", "references"}
CHECK_FIELDS = {"name", "attack", "test", "estimate", "interval", "alpha", "tolerance", "n", "reference", "verdict",
                "reason"}


def _certificate(client, headers, request_id):
    return client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=headers).json()["certificate"]


def _figures(model: dict) -> dict:
    """A certified model's verification block: an exact method's is its sanity check (format 3)."""
    return model["sanity_check"] if model["method_kind"] == "exact" else model["verification"]


def test_exact_method_records_its_verdicts_in_job_certificate_and_request(client, admin):
    train_in_process(client, admin, "exact", unlearning_method="retrain")
    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    model = _certificate(client, admin, request_id)["models"][0]
    assert model["method_kind"] == "exact" and "verification" not in model
    block = model["sanity_check"]["verdicts"]
    assert BLOCK_FIELDS <= set(block) and block["exact"] is True and block["escalates"] is False
    assert block["alpha"] == 0.05 and block["records"] == model["sanity_check"]["lineage_proof"]["forget_records"]
    assert {c["name"] for c in block["checks"]} >= {"forget_accuracy_gap", "mia_auc", "holdout_drop"}
    assert all(CHECK_FIELDS <= set(c) for c in block["checks"])
    # One subject's few records cannot show a retrain is within tolerance: said, not escalated.
    assert block["verdict"] == "inconclusive" and model["escalations"] == [] and model["method"] == "retrain"
    job = client.get(f"/v1/jobs/{model['job_id']}", headers=admin).json()
    assert job["result"]["model"]["verification"]["verdicts"] == block
    shown = client.get(f"/v1/erasure-requests/{request_id}", headers=admin).json()["progress"]["verification"]["exact"]
    assert shown["verdicts"] == block


@pytest.mark.usefixtures("control_sees_the_subjects")
def test_inconclusive_approximate_result_escalates_and_says_why(client, admin, settings_env):
    # Taken as testable (one subject's records alone leave the control without power, and an
    # untestable forget set never runs the approximate method: see below).
    settings_env(AUDIT_REFERENCES="0")
    train_in_process(client, admin, "small-forget", unlearning_method="finetune")
    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    version = model_version(client, admin, "small-forget", 2)
    assert version["origin"]["method"] == "retrain" and version["origin"]["requested_method"] == "finetune"
    reasons = " ".join(version["origin"]["escalations"][0]["reasons"])
    assert "inconclusive" in reasons and "too little evidence" in reasons
    audit = client.get(f"/v1/erasure-requests/{request_id}/audit", headers=admin).json()
    escalated = [e for e in audit["events"] if e["type"] == "unlearning.escalated"]
    assert escalated and escalated[0]["data"]["verdict"] == "inconclusive"
    # The certificate keeps the escalated method's verdicts next to the retrain's.
    model = _certificate(client, admin, request_id)["models"][0]
    assert model["escalations"][0]["verdicts"]["verdict"] == "inconclusive"
    assert model["sanity_check"]["verdicts"]["method"] == "retrain"


def test_failed_check_escalates_and_the_deprecated_threshold_still_applies(client, admin, settings_env):
    # OBLIVIATE_MAX_MIA_AUC=0 (deprecated) is a tolerance of −0.5 on AUC − 0.5: no interval meets it.
    settings_env(AUDIT_REFERENCES="0", MAX_MIA_AUC="0.0")
    train_in_process(client, admin, "never-enough", unlearning_method="finetune")
    # Four subjects in one batch: the intervals count subjects, and one subject alone tells
    # nothing of the spread between subjects (its AUC interval is the whole range).
    for raw in seen_subjects(4):
        batch_request(client, admin, raw)
    assert plan_approved() == 4
    assert execute_queued("unlearning") == ["completed"]
    version = model_version(client, admin, "never-enough", 2)
    assert version["origin"]["method"] == "retrain"
    escalated = version["origin"]["escalations"][0]["verdicts"]
    assert escalated["verdict"] == "fail" and escalated["tolerances"]["mia_auc"] == -0.5
    mia = next(c for c in escalated["checks"] if c["name"] == "mia_auc")
    assert mia["verdict"] == "fail" and mia["interval"][0] > -0.5


def test_checks_that_pass_the_original_take_the_exact_path_and_say_so(client, admin, settings_env):
    # Tolerances of 1.0 pass anything, the model before unlearning included: a pass proves
    # nothing, so the job retrains and says why, in the escalation, the audit and the ledger.
    settings_env(**LAX)
    train_in_process(client, admin, "lax", unlearning_method="scrub")
    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    version = model_version(client, admin, "lax", 2)
    assert version["origin"]["method"] == "retrain" and version["origin"]["requested_method"] == "scrub"
    assert version["origin"]["escalations"][0]["reasons"] == [NO_POWER]
    # The control ran first: scrub never ran, so the escalation has no verdicts of its own, and
    # the version is the retrain's.
    assert "verdicts" not in version["origin"]["escalations"][0]
    audit = client.get(f"/v1/erasure-requests/{request_id}/audit", headers=admin).json()
    escalated = [e for e in audit["events"] if e["type"] == "unlearning.escalated"]
    assert escalated and escalated[0]["data"]["reasons"][0] == NO_POWER
    control = _ledger(client, admin, request_id).no_op_control
    assert control is not None and control["testable"] is False and control["meaning"] == NO_POWER
    assert control["verdict"] == "pass" and control["method"] == "no_op_control"
    assert {c["name"] for c in control["checks"]} >= {"forget_accuracy_gap", "mia_auc"}


@pytest.mark.parametrize("tolerances", [{}, LAX], ids=["default", "lax"])
def test_the_original_weights_as_a_methods_output_are_never_certified(client, admin, settings_env, monkeypatch,
                                                                       tolerances):
    # A method that unlearns nothing: whatever the tolerances, the job takes the exact path.
    from workers.engine.unlearning.base import MethodCall, MethodOutput, get_method

    def no_op(call: MethodCall) -> MethodOutput:
        return MethodOutput(network=call.network, details={"steps": 0})

    monkeypatch.setattr(get_method("finetune"), "run", no_op)
    settings_env(**tolerances)
    train_in_process(client, admin, "no-op", unlearning_method="finetune")
    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    version = model_version(client, admin, "no-op", 2)
    assert version["origin"]["method"] == "retrain" and version["origin"]["escalations"][0]["from"] == "finetune"
    assert _ledger(client, admin, request_id).no_op_control is not None


def _ledger(client, headers, request_id):
    from app.unlearning.ledger import JobLedger

    job_id = _certificate(client, headers, request_id)["models"][0]["job_id"]
    return JobLedger.from_json(client.get(f"/v1/jobs/{job_id}", headers=headers).json()["result"])


def test_references_are_audited_destroyed_with_their_subjects_and_refilled(client, admin, settings_env, data_dir):
    from app.db import session_scope
    from app.jobs.models import Job
    from app.models.models import ModelReference

    settings_env(AUDIT_REFERENCES="4", REFERENCE_REFILL_DELAY_SECONDS="0", **LAX)
    train_in_process(client, admin, "audited", unlearning_method="finetune")
    with session_scope() as session:
        pool = list(session.scalars(select(ModelReference)))
        assert sorted(r.position for r in pool) == [0, 1, 2, 3]
        weights = {r.position: r.weights_sha256 for r in pool}
    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    model = _certificate(client, admin, request_id)["models"][0]
    audit = next(c for c in _figures(model)["verdicts"]["checks"] if c["name"] == "per_record_audit")
    assert audit["reference"] == "references" and audit["attack"] == "offline_lira"
    assert _figures(model)["verdicts"]["reference"] == "references"
    # One subject sits on one side of each pair: two of the four references held it.
    destroyed = model["destroyed_references"]
    assert len(destroyed) == 2 and {d["position"] // 2 for d in destroyed} == {0, 1}
    files = artifact_files(data_dir)
    for entry in destroyed:
        assert not any(weights[entry["position"]] in f for f in files)
    with session_scope() as session:
        live = {r.position for r in session.scalars(select(ModelReference).where(ModelReference.destroyed_at.is_(None)))}
        assert live == {0, 1, 2, 3} - {d["position"] for d in destroyed}
        refill = session.scalars(select(Job).where(Job.kind == "references")).all()
        assert len(refill) == 1
    assert execute_queued("references") == ["completed"]
    with session_scope() as session:
        live = list(session.scalars(select(ModelReference).where(ModelReference.destroyed_at.is_(None))))
        assert sorted(r.position for r in live) == [0, 1, 2, 3]
        assert max(r.generation for r in live) == 1


@pytest.mark.usefixtures("control_sees_the_subjects")
def test_too_few_references_escalate_with_the_reason(client, admin, settings_env):
    settings_env(AUDIT_REFERENCES="4", REFERENCE_REFILL_DELAY_SECONDS="3600", **LAX)
    train_in_process(client, admin, "starved", unlearning_method="finetune")
    subjects = seen_subjects(2)
    erase_in_process(client, admin, subjects[0])
    # The refill waits an hour; the next erasure finds half the pool.
    erase_in_process(client, admin, subjects[1])
    version = model_version(client, admin, "starved", 3)
    assert version["origin"]["method"] == "retrain"
    block = version["origin"]["escalations"][0]["verdicts"]
    assert block["references"]["live"] == 2 and block["references"]["expected"] == 4
    assert "2 of 4 reference models are live" in " ".join(version["origin"]["escalations"][0]["reasons"])


def test_a_refill_that_raced_an_erasure_records_nothing(client, admin, settings_env, monkeypatch):
    from app.artifacts.models import PendingDeletion
    from app.db import session_scope
    from app.jobs.models import Job
    from app.models.models import ModelReference
    from workers import references

    settings_env(AUDIT_REFERENCES="2", REFERENCE_REFILL_DELAY_SECONDS="0", **LAX)
    train_in_process(client, admin, "raced", unlearning_method="finetune")
    subjects = seen_subjects(2)
    erase_in_process(client, admin, subjects[0])
    trained_shas: list[str] = []
    real = references.train_positions

    def train_then_erase(*args, **kwargs):
        found = real(*args, **kwargs)
        trained_shas.extend(found.values())
        # While the refill trained on the old data, another erasure promotes a new version.
        erase_in_process(client, admin, subjects[1])
        return found

    monkeypatch.setattr(references, "train_positions", train_then_erase)
    assert execute_queued("references") == ["retry"]
    with session_scope() as session:
        recorded = set(session.scalars(select(ModelReference.weights_sha256)))
        assert trained_shas and not recorded & set(trained_shas)
        pending = set(session.scalars(select(PendingDeletion.sha256)))
        assert set(trained_shas) <= pending
        assert session.scalars(select(Job).where(Job.kind == "references", Job.status == "queued")).all()


@pytest.mark.usefixtures("control_sees_the_subjects")
def test_a_language_model_is_audited_against_its_references_and_refills_them(client, admin, settings_env):
    from app.db import session_scope
    from app.models.models import ModelReference

    settings_env(AUDIT_REFERENCES="4", REFERENCE_REFILL_DELAY_SECONDS="0", REHEARSAL="false")
    train_in_process(client, admin, "audited-lm", family="causal_lm", unlearning_method="npo")
    request_id = erase_in_process(client, admin, trained_subjects([f"u{i:03d}" for i in range(20)], 0.2, 1)[0])
    model = _certificate(client, admin, request_id)["models"][0]
    # NPO's block audits each of the subject's texts against the references that never saw it;
    # three texts cannot pass, so it escalates to a retrain, which is audited the same way.
    [escalation] = model["escalations"]
    for block in (escalation["verdicts"], model["sanity_check"]["verdicts"]):
        assert BLOCK_FIELDS <= set(block) and block["reference"] == "references"
        audit = next(c for c in block["checks"] if c["name"] == "per_record_audit")
        assert audit["attack"] == "offline_lira" and audit["n"] == block["records"] == 3
        # The checks judge the subject, not its texts: its three texts are one subject, and
        # every interval is clustered by subject key.
        assert audit["extra"]["subjects"] == 1 and audit["extra"]["records"] == 3
        checks = {c["name"]: c for c in block["checks"]}
        assert checks["mia_auc"]["extra"]["clustered_by_subject"]
        assert checks["extraction"]["extra"]["forget_subjects"] == 1
        assert block["references"]["live"] == 4 and set(block["tolerances"]) >= {"extraction", "mia_auc"}
    assert escalation["verdict"] != "pass" and model["method"] == "retrain"
    assert len(model["destroyed_references"]) == 2
    # The refill job loads a text model's records as windows and trains the two missing positions.
    assert execute_queued("references") == ["completed"]
    with session_scope() as session:
        live = list(session.scalars(select(ModelReference).where(ModelReference.destroyed_at.is_(None))))
        assert sorted(r.position for r in live) == [0, 1, 2, 3] and max(r.generation for r in live) == 1
