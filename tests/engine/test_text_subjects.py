"""A language model's checks judge subjects, not texts (workers/engine/verification/text_checks.py,
`TextSubjects`): generated per-text statistics of many subjects with several texts each, made to
show what a per-text test misses and what the subject-level one must catch."""

import numpy as np
import pytest

from app.lineage.reference_halves import membership
from workers.engine.verification import control as no_op
from workers.engine.verification.checks import Policy
from workers.engine.verification.scores import reference_inputs
from workers.engine.verification.text_checks import (
    TextSubjects,
    TokenStatistics,
    extractable,
    extraction_check,
    text_checks,
    text_verification_block,
)

POLICY = Policy()
K = 8  # references; each text has 4 that never saw it (one of each complementary pair)


def _side(rng, subjects: list[str], per: int, shift: np.ndarray, *, shared: float = 0.0):
    """Per text of `per` texts for each subject: its mean token log-likelihood under the target
    and under each reference. A text's difficulty is its subject's (a subject's texts are alike)
    plus its own; the target scores each text `shift` above what the references give it, plus
    noise, of which a part `shared` is common to a subject's texts."""
    n = len(subjects) * per
    difficulty = np.repeat(rng.normal(-2.0, 0.5, len(subjects)), per) + rng.normal(0, 0.2, n)
    references = difficulty[:, None] + rng.normal(0, 0.1, (n, K))
    common = np.repeat(rng.normal(0, 0.1, len(subjects)), per)
    noise = np.sqrt(shared) * common + np.sqrt(1 - shared) * rng.normal(0, 0.1, n)
    labels = np.repeat(np.asarray(subjects, dtype=object), per)
    return difficulty + 0.05 + noise + shift, references, labels


def _texts(seed: int, *, forget_subjects: int = 100, per: int = 4, shifts: dict[int, float] | None = None,
           shift: float = 0.0, shared: float = 0.0):
    """Statistics, LiRA inputs and subject labels of `forget_subjects` forget subjects and 100
    held-out subjects, `per` texts each. Every forget text scores `shift` above its OUT
    references; the texts of forget subject i `shifts[i]` instead."""
    rng = np.random.default_rng(seed)
    forget_keys = [f"forget-{i:03d}" for i in range(forget_subjects)]
    per_text = np.full(forget_subjects * per, shift)
    for subject, amount in (shifts or {}).items():
        per_text[subject * per:(subject + 1) * per] = amount
    forget_target, forget_refs, forget_labels = _side(rng, forget_keys, per, per_text, shared=shared)
    null_target, null_refs, null_labels = _side(rng, [f"held-{i:03d}" for i in range(100)], per,
                                                np.zeros(100 * per), shared=shared)
    forget_out = ~membership(forget_labels.tolist(), K, seed)
    inputs = reference_inputs(forget_target, forget_refs, forget_out, null_target, null_refs)

    def statistics(scores: np.ndarray, start: int) -> TokenStatistics:
        return TokenStatistics(np.arange(start, start + scores.size), -scores, scores, np.full(scores.size, 0.6))

    forget, holdout = statistics(forget_target, 10_000), statistics(null_target, 0)
    subjects = TextSubjects(forget_labels, null_labels, forget_labels, null_labels)
    return forget, holdout, inputs, subjects


def _checks(forget, holdout, inputs, subjects=None, extracted=None, holdout_extracted=None):
    forget_extracted = np.zeros(forget.records.size) if extracted is None else extracted
    held_extracted = np.zeros(holdout.records.size) if holdout_extracted is None else holdout_extracted
    found = text_checks(forget, holdout, holdout, forget_extracted, held_extracted, POLICY, inputs, inputs, subjects)
    return {c.name: c for c in found}


def _block(forget, holdout, inputs, subjects=None, requests=None, method="npo"):
    return text_verification_block(forget=forget, holdout=holdout, before_holdout=holdout,
                                   forget_extracted=np.zeros(forget.records.size),
                                   holdout_extracted=np.zeros(holdout.records.size), method=method,
                                   exact=method == "retrain", membership_inputs=inputs, min_k_inputs=inputs,
                                   live=K, pool_expected=K, policy=POLICY, requests=requests, subjects=subjects)


def test_a_memorised_subject_hidden_among_100_is_flagged_by_subject_where_a_per_text_test_misses_it():
    # Forget subject 37's four texts each score about 3 sd above what unseen texts score: no one
    # text clears Holm over 400 texts, but the four together (Stouffer) clear it over 100 subjects.
    forget, holdout, inputs, subjects = _texts(1, shifts={37: 0.34})
    by_text = _checks(forget, holdout, inputs)["per_record_audit"]
    assert by_text.extra["flagged"] == [] and by_text.verdict != "fail", by_text.reason
    by_subject = _checks(forget, holdout, inputs, subjects)["per_record_audit"]
    assert by_subject.verdict == "fail" and "individually still recognisable" in by_subject.reason
    assert by_subject.extra["subjects_flagged"] == 1 and by_subject.extra["subjects"] == 100
    # The flagged texts are subject 37's four, named by their record ids.
    assert by_subject.extra["flagged"] == [10_000 + 37 * 4 + i for i in range(4)]
    block = _block(forget, holdout, inputs, subjects)
    assert block["verdict"] == "fail" and block["escalates"]


def test_a_model_that_forgot_passes_with_every_check_counting_subjects():
    forget, holdout, inputs, subjects = _texts(2)
    block = _block(forget, holdout, inputs, subjects)
    assert block["verdict"] == "pass", block["reasons"]
    checks = {c["name"]: c for c in block["checks"]}
    assert checks["mia_auc"]["extra"]["clustered_by_subject"] and checks["mia_auc"]["reference"] == "references"
    assert checks["min_k_plus_plus_auc"]["extra"]["clustered_by_subject"]
    assert checks["extraction"]["extra"]["clustered_by_subject"]
    assert checks["extraction"]["extra"]["forget_subjects"] == 100
    audit = checks["per_record_audit"]["extra"]
    # TPR and FPR count subjects: 100 forget subjects against 100 held-out ones.
    assert audit["subjects"] == 100 and audit["null_subjects"] == 100 and audit["records"] == 400
    assert audit["epsilon_lower_bound"] == 0


def test_a_no_op_is_not_certified():
    # The original weights as a method's output: every forget text a little more familiar than
    # its references expect (about 1.3 sd), as a model that trained on them and never unlearned.
    forget, holdout, inputs, subjects = _texts(3, shift=0.15)
    result = _block(forget, holdout, inputs, subjects)
    checks = {c["name"]: c for c in result["checks"]}
    assert result["verdict"] == "fail" and result["escalates"]
    assert checks["mia_auc"]["verdict"] == "fail" and checks["min_k_plus_plus_auc"]["verdict"] == "fail"
    assert checks["per_record_audit"]["verdict"] == "fail"
    # Judged against the control (the same checks on the original, which are these): blocked.
    assert no_op.blocking(result, result)


def test_an_over_forgotten_set_fails():
    # Every forget text pushed far below what the references that never saw it give it: too
    # unfamiliar gives the subjects away as surely as too familiar.
    forget, holdout, inputs, subjects = _texts(4, shift=-0.3)
    checks = _checks(forget, holdout, inputs, subjects)
    assert checks["mia_auc"].verdict == "fail" and checks["mia_auc"].estimate < -POLICY.mia_auc
    assert checks["per_record_audit"].verdict == "fail"
    assert checks["per_record_audit"].extra["subjects_unfamiliar"] > 0
    # Ten subjects of 100 over-forgotten, the rest exact: each of the ten fails on its own.
    forget, holdout, inputs, subjects = _texts(5, shifts={i: -0.45 for i in range(0, 100, 10)})
    audit = _checks(forget, holdout, inputs, subjects)["per_record_audit"]
    assert audit.verdict == "fail" and "over-forgetting" in audit.reason
    assert audit.extra["subjects_unfamiliar"] == 10 and audit.extra["subjects_flagged"] == 0


def test_near_duplicate_texts_widen_the_auc_intervals_to_what_their_subjects_are_worth():
    # Half of each text's noise is its subject's: four texts are less than four pieces of evidence.
    forget, holdout, inputs, subjects = _texts(6, shared=0.7)
    by_text, by_subject = _checks(forget, holdout, inputs), _checks(forget, holdout, inputs, subjects)
    for name in ("mia_auc", "min_k_plus_plus_auc"):
        assert not by_text[name].extra["clustered_by_subject"] and by_subject[name].extra["clustered_by_subject"]
        assert by_subject[name].estimate == pytest.approx(by_text[name].estimate)
        width = by_subject[name].interval[1] - by_subject[name].interval[0]
        assert width > 1.3 * (by_text[name].interval[1] - by_text[name].interval[0])
    # The holdout drop resamples whole subjects too: a subject-wide drop is one unit.
    drops = np.repeat(np.random.default_rng(6).normal(0, 0.2, 100), 4)
    after = holdout._replace(accuracy=holdout.accuracy - drops)
    clustered = text_checks(forget, after, holdout, np.zeros(400), np.zeros(400), POLICY, inputs, inputs, subjects)[-1]
    plain = text_checks(forget, after, holdout, np.zeros(400), np.zeros(400), POLICY, inputs, inputs)[-1]
    assert clustered.name == plain.name == "holdout_drop"
    assert clustered.interval[1] - clustered.interval[0] > 1.3 * (plain.interval[1] - plain.interval[0])


def test_extraction_counts_subjects_and_weighs_a_subjects_texts_as_one():
    forget_subjects = np.repeat(np.asarray([f"s{i}" for i in range(50)], dtype=object), 4)
    holdout_subjects = np.repeat(np.asarray([f"h{i}" for i in range(50)], dtype=object), 4)
    # Five subjects give back all four of their texts; one held-out subject gives back one text.
    forget = np.zeros(200)
    forget[:20] = 1
    held = np.zeros(200)
    held[0] = 1
    plain = extraction_check(forget, held, POLICY)
    clustered = extraction_check(forget, held, POLICY, forget_subjects, holdout_subjects)
    assert clustered.extra["forget_subjects_extracted"] == 5 and clustered.extra["forget_subjects"] == 50
    assert clustered.extra["holdout_subjects_extracted"] == 1 and clustered.extra["holdout_subjects"] == 50
    assert clustered.estimate == pytest.approx(plain.estimate) == pytest.approx(0.095)
    # Twenty texts from five subjects are worth five subjects' evidence: the interval widens.
    assert clustered.interval[1] - clustered.interval[0] > 1.5 * (plain.interval[1] - plain.interval[0])
    with pytest.raises(ValueError):
        extraction_check(forget, held, POLICY, forget_subjects[:10], holdout_subjects)
    assert extractable(["ab", "x", "", "é"]).tolist() == [True, False, False, True]


def test_each_request_of_a_batch_is_judged_on_its_own_subjects():
    forget, holdout, inputs, subjects = _texts(7, shifts={37: 0.34})
    keys = subjects.forget
    first = np.isin(keys, [f"forget-{i:03d}" for i in range(50)])
    requests = {"a": first, "b": ~first, "absent": np.zeros(keys.size, dtype=bool)}
    block = _block(forget, holdout, inputs, subjects, requests)
    # Subject 37 belongs to request a: a fails on its own subjects, b does not, and the batch fails.
    assert block["requests"]["a"] == "fail" and block["requests"]["b"] != "fail"
    assert "absent" not in block["requests"] and block["verdict"] == "fail"
    own = {c["name"]: c for c in block["request_checks"]["b"]["checks"]}
    assert own["per_record_audit"]["extra"]["subjects"] == 50 and own["extraction"]["extra"]["forget_subjects"] == 50
    assert own["per_record_audit"]["extra"]["flagged"] == []
    flagged = {c["name"]: c for c in block["request_checks"]["a"]["checks"]}["per_record_audit"]["extra"]["flagged"]
    assert flagged == [10_000 + 37 * 4 + i for i in range(4)]


def test_every_text_needs_its_subject():
    forget, holdout, inputs, subjects = _texts(8)
    short = subjects.__class__(subjects.forget[:-1], subjects.holdout, subjects.forget_extracted,
                               subjects.holdout_extracted)
    with pytest.raises(ValueError):
        _checks(forget, holdout, inputs, short)
