"""A remediation request end to end, in-process: a poisoned source's slice selected, dry run,
approved by a second key, carried out by its job, certified, the old weights gone (410), and the
slice kept out of a later upload."""

from __future__ import annotations

import html

import pytest

from tests.dataset_files import SLICE_METADATA, TRIGGER, TRIGGER_LABEL, parquet_bytes, poisoned_digits, upload
from tests.factories import MLP_PARAMS, start_training
from tests.worker import execute_queued

pytestmark = pytest.mark.usefixtures("held_batches")


def _poisoned_model(client, headers, name: str) -> tuple[str, bytes]:
    content = parquet_bytes(poisoned_digits())
    created = upload(client, headers, content, name=f"data-{name}", **SLICE_METADATA)
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]
    response = start_training(client, headers, dataset_id, name, "mlp_classifier", holdout_fraction=0.2,
                              params={**MLP_PARAMS, "epochs": 30}, seed=1)
    assert response.status_code == 202, response.text
    assert execute_queued("training") == ["completed"]
    return dataset_id, content


def test_poisoned_source_removed_end_to_end(client, writer, reviewer):
    from app.certificates.signing import verify_document

    dataset_id, content = _poisoned_model(client, writer, "poisoned")
    body = {"kind": "poisoning", "reason": "vendor-b planted a backdoor", "dataset_id": dataset_id,
            "source": "vendor-b", "trigger": {"features": TRIGGER, "target_label": TRIGGER_LABEL}}
    created = client.post("/v1/remediation-requests", json=body, headers=writer)
    assert created.status_code == 201, created.text
    request = created.json()
    planted = sum(1 for s in poisoned_digits().column("source").to_pylist() if s == "vendor-b")
    dry = request["dry_run"]
    assert request["status"] == "pending_approval" and request["predicate"] == 'source == "vendor-b"'
    assert dry["records"] == planted and dry["versions"][0]["records"] == planted and dry["subjects"] > 0
    assert [m["model"] for m in dry["models"]] == ["poisoned"] and dry["models"][0]["method"] == "retrain"
    assert dry["models"][0]["estimated_cost"]["records_trained"] > 0

    # Four eyes: the creator's key cannot approve; a second key can.
    assert client.post(f"/v1/remediation-requests/{request['id']}/approve", headers=writer).status_code == 403
    approved = client.post(f"/v1/remediation-requests/{request['id']}/approve", headers=reviewer)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert execute_queued("remediation") == ["completed"]

    done = client.get(f"/v1/remediation-requests/{request['id']}", headers=reviewer).json()
    assert done["status"] == "completed", done
    assert done["result"]["dataset"]["rows_removed"] == planted
    model = done["result"]["models"][0]
    assert model["version_before"] == 1 and model["version_after"] == 2 and model["method"] == "retrain"
    attack = model["checks"]["attack_success"]
    assert attack["status"] == "run"
    assert attack["attack_success_rate"]["before"] > 0.5, attack
    assert attack["attack_success_rate"]["after"] < attack["attack_success_rate"]["before"] - 0.3, attack

    # The old weights held the slice: destroyed.
    assert client.get("/v1/models/poisoned/versions/1/weights", headers=writer).status_code == 410
    assert client.get("/v1/models/poisoned/versions/2/weights", headers=writer).status_code == 200

    certificate = client.get(f"/v1/remediation-requests/{request['id']}/certificate", headers=reviewer).json()
    assert verify_document(certificate)[0]
    body_ = certificate["certificate"]
    assert body_["type"] == "obliviate.certificate-of-remediation/v1"
    assert body_["predicate"] == 'source == "vendor-b"' and body_["counts"]["records"] == planted
    assert body_["models"][0]["destroyed"] == [{"version": 1, "sha256": model["sha256_before"]}]
    assert "record_ids" not in str(body_) and "subject_key" not in str(body_)
    trail = client.get(f"/v1/remediation-requests/{request['id']}/audit", headers=reviewer).json()
    types = [e["type"] for e in trail["events"]]
    assert types[:2] == ["remediation.created", "remediation.approved"] and types[-1] == "certificate.issued"
    assert "remediation.completed" in types and "model.remediated" in types

    # A later upload of the same file cannot bring the slice back.
    again = upload(client, writer, content, name="data-poisoned", **SLICE_METADATA)
    assert again.status_code == 201, again.text
    assert again.json()["rows"] == poisoned_digits().num_rows - planted

    # The dashboard's own view: the list, the dry run and the checks as a chart.
    from tests.dashboard.helpers import sign_in

    sign_in(client, reviewer["Authorization"].split()[1])
    listing = client.get("/admin/remediation")
    assert listing.status_code == 200 and f"/admin/remediation/{request['id']}" in listing.text
    page = html.unescape(client.get(f"/admin/remediation/{request['id']}").text)
    assert "<svg" in page and "attack success rate" in page and "Dry run" in page and 'source == "vendor-b"' in page


def test_the_remediation_chart_compares_before_after_and_retrain():
    from app.dashboard.charts import remediation_bars

    checks = {"group_metrics": {"status": "run", "groups": {"north": {"rows": 10, "positive_rate": {
        "before": 0.2, "after": 0.5, "retrain": 0.48, "after_vs_retrain": 0.02}}},
        "positive_rate_gap": {"before": 0.3, "after": 0.05, "retrain": 0.04, "after_vs_retrain": 0.01}}}
    bars = {bar.label: bar for bar in remediation_bars(checks)}
    assert set(bars) == {"group metrics groups north positive rate", "group metrics positive rate gap"}
    gap = bars["group metrics positive rate gap"]
    assert (gap.before, gap.after, gap.reference, gap.reference_label) == (0.3, 0.05, 0.04, "retrain")
    assert remediation_bars({"attack_success": {"status": "not run"}}) == []


@pytest.mark.parametrize("fail", [False, True], ids=["completed", "failed"])
def test_the_comparison_retrain_leaves_nothing_behind(client, writer, reviewer, monkeypatch, fail):
    """A SISA model is not retrained by its method, so the poisoning check trains a comparison
    retrain; its weights and checkpoints are deleted when the model's step ends, whether the job
    goes on or fails there, and nothing deletes what the new version uses."""
    from app.artifacts.store import get_store
    from app.db import session_scope
    from app.unlearning import service as unlearning_service
    from workers import remediation as worker

    content = parquet_bytes(poisoned_digits())
    created = upload(client, writer, content, name="data-sharded", **SLICE_METADATA)
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]
    response = start_training(client, writer, dataset_id, "sharded", "mlp_classifier", holdout_fraction=0.2,
                              params={**MLP_PARAMS, "epochs": 5}, seed=1, sisa={"shards": 2, "slices": 2})
    assert response.status_code == 202, response.text
    assert execute_queued("training") == ["completed"]

    comparison: list[str] = []
    run_method, measure = worker.unlearning.run_method, worker.measure

    def recording(ctx, name, *args, **kwargs):
        if name != "retrain":
            return run_method(ctx, name, *args, **kwargs)
        # SISA is exact: under the model's seed its shards are the retrain's bytes, which the new
        # version keeps. Under another seed the comparison's bytes are its own, to be deleted.
        found = worker.unlearning.retrain(ctx, training_seed=ctx.seed + 1)
        comparison.extend(worker.artifacts_of(found.shards))
        return found

    def measuring(*args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(worker.unlearning, "run_method", recording)
            return measure(*args, **kwargs)

    monkeypatch.setattr(worker, "measure", measuring)
    if fail:
        def broken(*_args, **_kwargs):
            raise RuntimeError("the check broke")

        monkeypatch.setattr(worker.checks, "attack_success", broken)
    body = {"kind": "poisoning", "reason": "vendor-b planted a backdoor", "dataset_id": dataset_id,
            "source": "vendor-b", "trigger": {"features": TRIGGER, "target_label": TRIGGER_LABEL}}
    request = client.post("/v1/remediation-requests", json=body, headers=writer).json()
    assert request["dry_run"]["models"][0]["method"] == "sisa"
    assert request["dry_run"]["models"][0]["estimated_cost"]["comparison_retrain"] is True
    assert client.post(f"/v1/remediation-requests/{request['id']}/approve", headers=reviewer).status_code == 200
    outcome = execute_queued("remediation")
    assert (outcome != ["completed"]) if fail else (outcome == ["completed"]), outcome
    assert comparison, "the comparison retrain ran"

    store = get_store()
    with session_scope() as session:
        in_use = unlearning_service.live_references(session, comparison)
    left = [sha for sha in comparison if store.exists(sha) and sha not in in_use]
    assert left == []
    assert any(not store.exists(sha) for sha in comparison)
    if not fail:
        done = client.get(f"/v1/remediation-requests/{request['id']}", headers=reviewer).json()
        model = done["result"]["models"][0]
        assert model["method"] == "sisa" and model["checks"]["attack_success"]["status"] == "run"
        # Every artifact of the new version is still there, and its weights are served.
        from sqlalchemy import select

        from app.models.models import ModelVersion

        with session_scope() as session:
            current = session.scalars(select(ModelVersion).where(ModelVersion.sha256 == model["sha256_after"])).one()
            verdicts = (current.metrics or {}).get("verification", {}).get("verdicts") or {}
            kept = [current.manifest_sha256, *(sha for shard in current.shards
                                              for sha in (shard["weights"], *shard.get("checkpoints", [])))]
        assert all(store.exists(sha) for sha in kept)
        assert client.get("/v1/models/sharded/versions/2/weights", headers=writer).status_code == 200
        # The dataset declares a source column: the verdicts cluster the slice by subject and source.
        assert verdicts.get("clusters") == "subjects and sources", verdicts
