"""Certificate format 3 (issue 20 item 5, issue 21 items 1 and 7, issue 22 item 1): the body names
its client and digests the subject for that client alone; it states the scope searched, the
copies downloaded before the erasure, and each model's method kind with what supports it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.audit.downloads import DownloadedCopy
from app.certificates.sections import BASE_SCOPE_STATEMENT, COPIES_STATEMENT, ModelErasure
from tests.certificates.format3_bodies import DATASET, DATASET_ID, KEYS, MODEL_ID, NOW, REQUEST, VERDICTS
from tests.certificates.format3_bodies import body as _body
from tests.certificates.format3_bodies import model_entry as _model


def test_the_body_names_its_client_and_a_digest_only_that_client_gives(database_url):
    from app.certificates import subject

    a, b = _body(client="acme"), _body(client="globex")
    assert a["format_version"] == 3 and a["client"] == "acme" and b["client"] == "globex"
    assert a["subject_key_digest"] != b["subject_key_digest"]
    assert subject.confirms(subject.client_key("acme"), KEYS, a["subject_key_digest"])
    assert not subject.confirms(subject.client_key("globex"), KEYS, a["subject_key_digest"])
    assert not subject.confirms(subject.client_key("acme"), {"email": "b" * 64}, a["subject_key_digest"])


def test_the_scope_lists_kinds_searched_and_what_held_the_person(database_url):
    scope = _body()["scope"]
    assert scope["identifier_kinds"] == ["email"]
    assert scope["datasets"] == [{"name": "users", "version": 1, "held_subject": True},
                                 {"name": "other", "version": 4, "held_subject": False}]
    assert scope["models"] == [{"name": "churn", "version": 1, "held_subject": True}]
    # Without a recorded search, the request's own kinds were all that was searched.
    assert scope["resolved_kinds"] == ["email"] and scope["subject_keys_searched"] is None


def test_verify_describes_the_scope_of_format_3_only(database_url):
    from app.certificates.verification import scope_summary

    summary = scope_summary(_body())
    assert summary is not None and summary.describe() == (
        "searched identifier kinds email", "searched dataset users v1: held the person",
        "searched dataset other v4: did not hold the person", "searched model churn v1: held the person")
    assert scope_summary({"format_version": 2, "scope": {}}) is None


def test_an_exact_model_says_what_makes_it_exact_and_labels_its_figures_a_sanity_check(database_url):
    sisa = _model("sisa", details={"shards_retrained": [2], "slices_retrained": 3, "slices_total": 20})
    [model] = _body([ModelErasure(sisa, "exact", DATASET)])["models"]
    assert model["method_kind"] == "exact" and "verification" not in model and "verdict" not in model
    assert model["sanity_check"] == {"verdicts": VERDICTS}
    exact = model["exact"]
    assert exact["dataset_version_without_records"] == {"name": "users", "version": 2, "sha256": "d2"}
    assert (exact["shards_retrained"], exact["slices_retrained"], exact["slices_total"]) == ([2], 3, 20)
    assert exact["weights_sha256"] == {"before": "w1", "after": "w2"}


def test_a_model_fine_tuned_from_a_base_states_that_the_bases_pretraining_data_is_out_of_scope(database_url):
    base = {"base_id": "b1", "architecture": "gpt2", "archive_sha256": "a" * 64}
    for method, kind in (("sisa", "exact"), ("npo", "approximate")):
        [model] = _body([ModelErasure(_model(method, base=base), kind, DATASET)])["models"]
        assert model["base"] == {**base, "statement": BASE_SCOPE_STATEMENT}
        assert "pretraining data is out of scope" in model["base"]["statement"]
    [plain] = _body([ModelErasure(_model("sisa"), "exact", DATASET)])["models"]
    assert "base" not in plain


def test_an_approximate_model_carries_its_verification_no_op_control_and_the_requests_verdict(database_url):
    control = {"verdict": "fail", "checks": []}
    per_request = _model("gradient_ascent", verification={
        "verdicts": {**VERDICTS, "verdict": "fail", "requests": {str(REQUEST): "pass"}}})
    [model] = _body([ModelErasure(per_request, "approximate", DATASET, control)])["models"]
    assert model["method_kind"] == "approximate" and model["no_op_control"] == control
    assert model["verdict"] == "pass"  # the request's own, not the batch's
    assert model["verification"]["verdicts"]["verdict"] == "fail" and "exact" not in model
    [plain] = _body([ModelErasure(_model("gradient_ascent"), "approximate", DATASET)])["models"]
    assert plain["verdict"] == "pass" and "no_op_control" not in plain


def test_copies_downloaded_are_listed_as_outside_the_services_reach(database_url):
    copy = DownloadedCopy("model", MODEL_ID, 1, "weights", "w1", "k1", "acme", NOW - timedelta(hours=1))
    section = _body(copies=[copy])["copies_downloaded"]
    assert section["statement"] == COPIES_STATEMENT and "outside the service's reach" in section["statement"]
    assert section["copies"] == [{"kind": "model", "id": str(MODEL_ID), "version": 1, "artifact": "weights",
                                  "sha256": "w1", "downloaded_by_key": "k1", "client": "acme",
                                  "at": "2026-12-07T04:00:00.000000Z"}]
    assert _body()["copies_downloaded"]["copies"] == []


def test_the_copies_looked_up_are_those_of_the_versions_that_held_the_person():
    from app.certificates.sections import erased_versions

    held = _model("retrain", destroyed=[{"version": 0, "sha256": "w0", "artifacts": []}])
    never = {"model": "other", "model_id": str(uuid.uuid4()), "version_before": 5, "sha256_before": "x",
             "note": "current version never held the subjects", "destroyed": []}
    models, datasets = erased_versions([DATASET], [ModelErasure(held, "exact"), ModelErasure(never, "exact")])
    assert models == [(MODEL_ID, 0), (MODEL_ID, 1)]
    assert datasets == [(DATASET_ID, 1)]


def test_a_model_that_never_held_the_person_is_exact_by_its_unchanged_weights(database_url):
    never = {"model": "other", "model_id": str(uuid.uuid4()), "version_before": 5, "sha256_before": "x",
             "note": "current version never held the subjects", "destroyed": []}
    [model] = _body([ModelErasure(never, "exact")])["models"]
    assert model["method_kind"] == "exact" and "never trained" in model["exact"]["statement"]
    assert model["exact"]["weights_sha256"] == {"before": "x", "after": "x"}


def test_a_batch_certificate_shows_the_requests_own_checks_and_no_other_requests(database_url):
    other = str(uuid.uuid4())
    own_block = {"verdict": "pass", "alpha": 0.05, "reasons": [], "checks": [{"name": "per_record_audit"}]}
    batch = {**VERDICTS, "verdict": "fail", "requests": {str(REQUEST): "pass", other: "fail"},
             "request_checks": {str(REQUEST): own_block, other: {"verdict": "fail", "checks": []}}}
    control = {"verdict": "fail", "checks": [], "requests": {str(REQUEST): "fail", other: "pass"}}
    entry = _model("scrub", verification={"verdicts": batch})
    [model] = _body([ModelErasure(entry, "approximate", DATASET, control)])["models"]
    assert model["verdict"] == "pass" and model["request_verification"] == own_block
    # The batch's verdict stays, and says the batch failed; the other request is not named.
    assert model["verification"]["verdicts"]["verdict"] == "fail"
    assert model["verification"]["verdicts"]["requests"] == {str(REQUEST): "pass"}
    assert list(model["verification"]["verdicts"]["request_checks"]) == [str(REQUEST)]
    assert model["no_op_control"]["requests"] == {str(REQUEST): "fail"}
    assert other not in str(model)
