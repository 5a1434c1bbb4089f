"""A language model from upload to verified erasure, through the API and a real Celery worker:
upload text, train a tiny causal_lm, generate, score, erase the subject who carries a canary;
the request completes with a certificate, the canary's exposure falls and the old weights
answer 410."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from tests.factories import approved_request, train, trained_subjects
from tests.objects import TINY_LM
from tests.text_files import CANARY_PREFIX, csv_bytes, notes_table, secret_of, upload_text
from tests.worker import wait_terminal

pytestmark = pytest.mark.timeout(900)
SEED, HOLDOUT = 3, 0.2
PARAMS = {**TINY_LM, "steps": 200}


def _canary_subject() -> int:
    """A subject outside the holdout of this seed, so the weights see its canary."""
    trained = trained_subjects([f"u{i:03d}" for i in range(20)], HOLDOUT, SEED)
    return next(i for i in range(3, 20) if f"u{i:03d}" in trained)


_train = partial(train, family="causal_lm", timeout=400, holdout_fraction=HOLDOUT, params=PARAMS, seed=SEED)


def _exposure(client, headers, model: str, secret: str) -> float:
    """log2 of the candidate space minus log2 of the true secret's rank by score, over every
    four-digit code."""
    texts = [f"{CANARY_PREFIX}{code:04d}." for code in range(10_000)]
    scores_of = []
    # In calls of 2,500 texts: one call of all 10,000 is over the per-call inference budget.
    for start in range(0, len(texts), 2_500):
        response = client.post(f"/v1/models/{model}/score", json={"texts": texts[start:start + 2_500]}, headers=headers)
        assert response.status_code == 200, response.text
        scores_of += [s["log_likelihood"] for s in response.json()["scores"]]
    scores = np.array(scores_of)
    rank = 1 + int((scores > scores[int(secret)]).sum())
    return math.log2(10_000) - math.log2(rank)


def _generate(client, headers, model: str) -> str:
    response = client.post(f"/v1/models/{model}/generate", headers=headers,
                           json={"prompt": CANARY_PREFIX, "max_new_tokens": 5, "temperature": 0, "seed": 0})
    assert response.status_code == 200, response.text
    return response.json()["text"]


def test_language_model_erasure_end_to_end(client, admin, settings_env, worker):
    from app.certificates.signing import verify_document

    subject = _canary_subject()
    secret = secret_of(subject)
    table = notes_table(subjects=20, per_subject=3, canaries={subject: 5})
    dataset = upload_text(client, admin, csv_bytes(table))
    assert dataset.status_code == 201, dataset.text
    dataset_id = dataset.json()["dataset_id"]
    _train(client, admin, dataset_id, "notes-lm")
    _train(client, admin, dataset_id, "notes-npo", unlearning_method="npo")
    _train(client, admin, dataset_id, "notes-sisa", sisa={"shards": 2, "slices": 2}, params={**PARAMS, "steps": 400})
    model = client.get("/v1/models/notes-lm", headers=admin).json()
    assert model["family"] == "causal_lm" and model["versions"][0]["metrics"]["holdout"]["perplexity"] > 1

    assert _generate(client, admin, "notes-lm") == f"{secret}."
    before = {name: _exposure(client, admin, name, secret) for name in ("notes-lm", "notes-npo", "notes-sisa")}
    assert before["notes-lm"] >= 10, before

    request_id = approved_request(client, admin, f"u{subject:03d}")
    result = wait_terminal(client, admin, request_id, timeout=500)
    assert result["status"] == "completed", result["status_reason"]
    assert result["outcome"] == "erased"

    names = ("notes-lm", "notes-npo", "notes-sisa")
    after = {name: client.get(f"/v1/models/{name}", headers=admin).json() for name in names}
    assert after["notes-lm"]["current"] == 2
    assert after["notes-lm"]["versions"][1]["origin"]["method"] == "retrain"
    sisa = after["notes-sisa"]["versions"][1]["origin"]
    assert sisa["method"] == "sisa" and len(after["notes-sisa"]["versions"][1]["metrics"]["verification"]) > 0
    npo = after["notes-npo"]["versions"][1]["origin"]
    # A language model is judged by the statistical verdicts: on the subject's 8 texts no
    # interval is narrow enough to pass (the AUC's alone is wider than ±0.1), so NPO escalates to
    # a retrain whatever it did, and the escalation carries its text block.
    assert npo["requested_method"] == "npo" and npo["method"] == "retrain"
    [escalation] = npo["escalations"]
    assert escalation["to"] == "retrain" and escalation["verdict"] in ("fail", "inconclusive")
    # The verdict is judged on the confirmation half of the 8 references (pairs 2j, 2j+1 together).
    assert escalation["reasons"] and escalation["verdicts"]["references"]["live"] == 4
    assert [c["name"] for c in escalation["verdicts"]["checks"]] == [
        "mia_auc", "min_k_plus_plus_auc", "extraction", "per_record_audit", "holdout_drop"]
    # Its 8 texts are one subject's: the audit counts one subject, and the AUCs cluster by subject.
    judged = {c["name"]: c for c in escalation["verdicts"]["checks"]}
    assert judged["per_record_audit"]["extra"]["subjects"] == 1 and judged["per_record_audit"]["extra"]["records"] == 8
    assert judged["mia_auc"]["extra"]["clustered_by_subject"] and judged["extraction"]["extra"]["forget_subjects"] == 1
    for name in names:
        assert client.get(f"/v1/models/{name}/versions/1/weights", headers=admin).status_code == 410
        assert client.get(f"/v1/models/{name}/versions/2/weights", headers=admin).status_code == 200
        figures = after[name]["versions"][1]["metrics"]["verification"]
        assert figures["lineage_proof"]["in_new_manifest"] == 0
        assert figures["after"]["text"]["extraction"]["forget"]["records"] == 8
        # Exact results record their verdicts too: the model without references runs no audit,
        # the SISA model audits against its shards.
        verdicts = figures["verdicts"]
        assert verdicts["records"] == 8 and not verdicts["escalates"]
        assert verdicts["method"] == after[name]["versions"][1]["origin"]["method"]
        names_run = [c["name"] for c in verdicts["checks"]]
        assert names_run[:3] == ["mia_auc", "min_k_plus_plus_auc", "extraction"] and "holdout_drop" in names_run
        assert ("per_record_audit" in names_run) == (name != "notes-lm")
    assert after["notes-sisa"]["versions"][1]["metrics"]["verification"]["verdicts"]["reference"] == "shards"
    exposure_after = _exposure(client, admin, "notes-lm", secret)
    assert exposure_after < before["notes-lm"] - 4, (before, exposure_after)
    assert _generate(client, admin, "notes-lm") != f"{secret}."
    assert _exposure(client, admin, "notes-npo", secret) < before["notes-npo"] - 2
    assert _generate(client, admin, "notes-sisa") != f"{secret}."

    document = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=admin).json()
    public = client.get("/v1/keys/signing").json()["public_key"]
    assert verify_document(document, public) == (True, "valid")
    body = document["certificate"]
    assert {m["model"] for m in body["models"]} == set(names)
    assert body["datasets"][0]["rows_removed"] == 3 + 5
    assert f"u{subject:03d}" not in str(document)
    # The stored text no longer holds the canary.
    version = client.get(f"/v1/datasets/{dataset_id}", headers=admin).json()["versions"][-1]
    assert version["rows"] == table.num_rows - 8 and version["current"]


def test_a_large_language_model_defaults_to_an_approximate_method_of_its_family(settings_env):
    from app.models.models import Model
    from app.unlearning.method_choice import choose_method

    settings_env(SMALL_MODEL_ROWS=100)
    assert choose_method(Model(family="causal_lm", sisa=None, unlearning_method=None), 50) == "retrain"
    assert choose_method(Model(family="causal_lm", sisa=None, unlearning_method=None), 5000) == "gradient_difference"
    assert choose_method(Model(family="mlp_classifier", sisa=None, unlearning_method=None), 5000) == "finetune"
    assert choose_method(Model(family="causal_lm", sisa={"shards": 2, "slices": 2}, unlearning_method=None), 5000) == "sisa"
