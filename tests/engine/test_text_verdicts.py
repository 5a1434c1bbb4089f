"""A language model's verdicts (workers/engine/verification/text_checks.py): each text check gives pass, fail
and inconclusive on per-record figures built for it, the block has the tabular block's shape, and
the per-record figures come from the networks as stated."""

import numpy as np
import pytest
import torch
from torch import nn

from app.families.builtin import LM_VOCAB
from app.lineage.reference_halves import membership
from workers.engine.families.causal_lm import CausalLMFamily, record_windows
from workers.engine.verification.checks import Policy
from workers.engine.verification.scores import reference_inputs
from workers.engine.records import TextRecords
from workers.reference_training import row_membership
from workers.engine.verification.text_checks import (
    TokenStatistics,
    extraction_check,
    extraction_outcomes,
    min_k_auc_check,
    score,
    text_checks,
    text_verification_block,
    token_statistics,
)

POLICY = Policy()
# The keys of the tabular block (workers/engine/verification/checks.py verification_block).
BLOCK_KEYS = {"verdict", "alpha", "reasons", "notes", "checks", "attacks", "records", "reference", "confirmation",
              "epsilon_lower_bound", "escalates", "method", "exact", "tolerances", "references"}


def statistics(loss, min_k=None, accuracy=None, start: int = 0) -> TokenStatistics:
    loss = np.asarray(loss, dtype=np.float64)
    return TokenStatistics(np.arange(start, start + len(loss)), loss,
                           np.asarray(-loss if min_k is None else min_k, dtype=np.float64),
                           np.asarray(np.full(len(loss), 0.5) if accuracy is None else accuracy, dtype=np.float64))


def bits(n: int, ones: int, seed: int = 0) -> np.ndarray:
    values = np.zeros(n)
    values[:ones] = 1
    return np.random.default_rng(seed).permutation(values)


def by_name(block: dict) -> dict:
    return {c["name"]: c for c in block["checks"]}


def test_min_k_plus_plus_auc_pass_fail_inconclusive_and_two_sided():
    rng = np.random.default_rng(11)
    holdout = rng.normal(0, 1, 3000)
    assert min_k_auc_check(rng.normal(0, 1, 2000), holdout, POLICY).verdict == "pass"
    remembered = min_k_auc_check(rng.normal(1.0, 1, 300), holdout, POLICY)  # higher score = member
    assert remembered.verdict == "fail" and remembered.extra["auc"] > 0.7
    assert remembered.attack == "min_k_plus_plus" and remembered.test == "delong" and remembered.two_sided
    # Far less familiar than unseen text gives the forget records away just as well.
    over_forgotten = min_k_auc_check(rng.normal(-1.0, 1, 300), holdout, POLICY)
    assert over_forgotten.verdict == "fail" and over_forgotten.extra["auc"] < 0.3
    assert min_k_auc_check(rng.normal(0, 1, 10), holdout, POLICY).verdict == "inconclusive"


def test_extraction_pass_fail_inconclusive_is_one_sided_against_the_holdout():
    holdout = bits(200, 10)
    passed = extraction_check(bits(300, 15, 1), holdout, POLICY)
    assert passed.verdict == "pass" and passed.interval[1] <= POLICY.extraction, passed.reason
    failed = extraction_check(bits(100, 40), holdout, POLICY)
    assert failed.verdict == "fail" and failed.interval[0] > POLICY.extraction
    assert failed.extra["forget_extracted"] == 40 and failed.extra["holdout_extracted"] == 10
    small = extraction_check(bits(8, 0), holdout, POLICY)  # nothing extracted, but 8 records prove little
    assert small.verdict == "inconclusive" and small.n == 8 and "too little evidence" in small.reason
    # Fewer forget records extracted than held-out ones is no memorisation (one-sided).
    assert extraction_check(bits(400, 0), bits(200, 60), POLICY).verdict == "pass"
    assert extraction_check(np.zeros(0), holdout, POLICY).verdict == "inconclusive"


def _audit_scores(seed: int, n_forget: int, memorised: int, k: int = 8):
    """Per-record scores (mean token log-likelihoods) of a model and its references that vary
    with each text's difficulty; `memorised` forget records keep a much higher score."""
    rng = np.random.default_rng(seed)

    def side(n, shift):
        difficulty = rng.normal(-2.0, 0.6, n)
        refs = difficulty[:, None] + rng.normal(0, 0.1, (n, k))
        return difficulty + 0.05 + rng.normal(0, 0.1, n) + shift, refs

    shift = np.zeros(n_forget)
    shift[rng.choice(n_forget, memorised, replace=False)] = 1.0
    forget_target, forget_refs = side(n_forget, shift)
    null_target, null_refs = side(400, np.zeros(400))
    forget_out = ~membership([f"subject-{i}" for i in range(n_forget)], k, seed)
    return reference_inputs(forget_target, forget_refs, forget_out, null_target, null_refs)


def _block(forget_n=600, holdout_n=800, *, audit=None, pool_expected=0, live=0, before_accuracy=None,
           after_accuracy=None, forget_extracted=None, seed=0, method="npo"):
    rng = np.random.default_rng(seed)
    forget = statistics(rng.normal(2.0, 0.3, forget_n), start=10_000)
    holdout = statistics(rng.normal(2.0, 0.3, holdout_n),
                         accuracy=np.full(holdout_n, 0.6) if after_accuracy is None else after_accuracy)
    before = statistics(holdout.loss, accuracy=np.full(holdout_n, 0.6) if before_accuracy is None else before_accuracy)
    extracted = bits(forget_n, 0) if forget_extracted is None else forget_extracted
    return text_verification_block(forget=forget, holdout=holdout, before_holdout=before, forget_extracted=extracted,
                                   holdout_extracted=bits(200, 0), method=method, exact=method in ("retrain", "sisa"),
                                   membership_inputs=audit,
                                   live=live, pool_expected=pool_expected, reference_ids=[f"r{i}" for i in range(live)],
                                   policy=POLICY)


def test_the_block_has_the_tabular_shape_and_passes_a_model_that_forgot():
    block = _block(audit=_audit_scores(7, 600, 0), live=8, pool_expected=8)
    assert set(block) == BLOCK_KEYS
    checks = by_name(block)
    assert list(checks) == ["mia_auc", "min_k_plus_plus_auc", "extraction", "per_record_audit", "holdout_drop"]
    assert block["verdict"] == "pass" and not block["escalates"], block["reasons"]
    assert block["attacks"] == ["loss_threshold", "min_k_plus_plus", "offline_lira", "verbatim_extraction"]
    assert block["reference"] == "references" and block["records"] == 600
    assert block["epsilon_lower_bound"] == checks["per_record_audit"]["extra"]["epsilon_lower_bound"] is not None
    assert set(block["tolerances"]) == {"mia_auc", "extraction", "audit", "holdout_drop"}
    assert block["references"] == {"live": 8, "expected": 8, "ids": [f"r{i}" for i in range(8)]}
    assert checks["holdout_drop"]["utility"] and not checks["mia_auc"]["utility"]
    assert all(c["confidence"] == 0.9 and c["interval"] is not None for c in block["checks"])


def test_the_text_audit_flags_memorised_records_and_fails_the_block():
    inputs = _audit_scores(3, 60, 5)
    block = _block(forget_n=60, audit=inputs, live=8, pool_expected=8)
    audit = by_name(block)["per_record_audit"]
    assert audit["verdict"] == "fail" and len(audit["extra"]["flagged"]) == 5
    # The flagged records are named by their record ids (the forget statistics' ids).
    assert all(10_000 <= r < 10_060 for r in audit["extra"]["flagged"])
    assert block["verdict"] == "fail" and block["escalates"]
    assert any(r.startswith("fail: ") and "individually still recognisable" in r for r in block["reasons"])


def test_the_text_audit_is_inconclusive_with_too_few_references_and_absent_without_any():
    inputs = _audit_scores(5, 600, 0)
    # Only one of each pair is left: no record has two references that never saw it.
    starved = reference_inputs(inputs.forget_target, inputs.forget_references[:, :2], inputs.forget_out[:, :2],
                               inputs.null_target, inputs.null_references[:, :2])
    block = _block(audit=starved, live=2, pool_expected=8)
    audit = by_name(block)["per_record_audit"]
    assert audit["verdict"] == "inconclusive" and "too few references" in audit["reason"]
    assert "2 of 8 reference models are live" in audit["reason"] and block["verdict"] == "inconclusive"
    # The pool should exist but none is live: the audit says so instead of vanishing.
    missing = by_name(_block(pool_expected=8))["per_record_audit"]
    assert missing["verdict"] == "inconclusive" and "too few references" in missing["reason"]
    # A model without references (an exact method's) runs no audit, like a tabular one.
    none = _block()
    assert "per_record_audit" not in by_name(none) and none["reference"] == "holdout"
    assert none["references"] == {"live": 0, "expected": 0, "ids": []} and none["epsilon_lower_bound"] is None
    assert none["verdict"] == "pass"


def test_the_text_holdout_drop_is_paired_per_record_and_an_approximate_result_must_prove_it():
    rng = np.random.default_rng(2)
    before = rng.uniform(0.3, 0.7, 800)
    same = by_name(_block(before_accuracy=before, after_accuracy=before.copy()))["holdout_drop"]
    assert same["verdict"] == "pass" and same["interval"] == [0.0, 0.0]
    dropped = _block(before_accuracy=before, after_accuracy=before - 0.1)
    assert by_name(dropped)["holdout_drop"]["verdict"] == "fail" and dropped["verdict"] == "fail"
    # A mean drop of exactly the tolerance, each record ±0.2 around it: the interval straddles
    # the tolerance. An approximate result must prove its price, so that blocks its certificate;
    # an exact one's block records it under notes and still passes.
    noisy = before - POLICY.holdout_drop + rng.permutation(np.repeat([0.2, -0.2], 400))
    unsure = _block(before_accuracy=before, after_accuracy=noisy)
    assert by_name(unsure)["holdout_drop"]["verdict"] == "inconclusive"
    assert unsure["verdict"] == "inconclusive" and not unsure["notes"] and unsure["escalates"]
    assert any("accuracy drop" in r for r in unsure["reasons"])
    exact = _block(before_accuracy=before, after_accuracy=noisy, method="retrain")
    assert by_name(exact)["holdout_drop"]["verdict"] == "inconclusive"
    assert exact["verdict"] == "pass" and exact["notes"] and not exact["reasons"]


def test_text_checks_pair_only_the_same_held_out_records():
    forget, holdout = statistics(np.ones(5)), statistics(np.ones(5))
    with pytest.raises(ValueError):
        text_checks(forget, holdout, statistics(np.ones(5), start=100), bits(5, 0), bits(5, 0), POLICY)


def test_a_loss_or_min_k_attack_or_extraction_fails_the_block_each_on_its_own():
    rng = np.random.default_rng(4)
    holdout = statistics(rng.normal(2.0, 0.3, 800))
    forget_loss = rng.normal(2.0, 0.3, 600)
    base = dict(holdout=holdout, before_holdout=holdout, holdout_extracted=bits(200, 0), method="npo", exact=False,
                policy=POLICY)
    remembered = text_verification_block(forget=statistics(forget_loss - 0.5), forget_extracted=bits(600, 0), **base)
    assert by_name(remembered)["mia_auc"]["verdict"] == "fail"
    # Same losses, but the Min-K%++ scores say member.
    min_k = text_verification_block(forget=statistics(forget_loss, min_k=-forget_loss + 0.5),
                                    forget_extracted=bits(600, 0), **base)
    checks = by_name(min_k)
    assert checks["mia_auc"]["verdict"] == "pass" and checks["min_k_plus_plus_auc"]["verdict"] == "fail"
    extracted = text_verification_block(forget=statistics(forget_loss), forget_extracted=bits(600, 120), **base)
    assert by_name(extracted)["extraction"]["verdict"] == "fail" and extracted["verdict"] == "fail"
    assert {c["verdict"] for c in by_name(extracted).values() if c["name"] != "extraction"} == {"pass"}
    # An exact method records the same verdict but never escalates on it.
    exact = text_verification_block(forget=statistics(forget_loss), forget_extracted=bits(600, 120),
                                    **{**base, "method": "retrain", "exact": True})
    assert exact["verdict"] == "fail" and not exact["escalates"]


class AlwaysA(nn.Module):
    """A 'network' that puts nearly all its probability on byte 'a' at every position."""

    def __init__(self, block_size: int):
        super().__init__()
        table = torch.zeros(block_size, LM_VOCAB)
        table[:, ord("a")] = 10.0
        self.table = nn.Parameter(table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[: tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


def test_per_record_accuracy_extraction_and_score_come_from_the_network():
    network = AlwaysA(64)
    texts = ["aaaa", "bbbb", "aaaaaaaa", "aaaabbbb", "x"]
    windows, owners = record_windows(texts, 64)
    found = token_statistics([network], torch.from_numpy(windows), owners)
    # BOS a a a a EOS: four of the five targets are 'a'; none of b b b b EOS.
    assert found.records.tolist() == [0, 1, 2, 3, 4]
    assert found.accuracy[:2].tolist() == pytest.approx([0.8, 0.0])
    one = CausalLMFamily.evaluate([network], torch.from_numpy(windows[owners == 0]), torch.from_numpy(owners[owners == 0]))
    assert one["accuracy"] == pytest.approx(found.accuracy[0])
    # The audit's score is the mean token log-likelihood: higher where the network fits the text.
    assert score(found)[0] > score(found)[1] and score(found).tolist() == pytest.approx((-found.loss).tolist())
    # Second halves "aaaa" come back, "bbbb" does not; one byte cannot be split and is left out.
    assert extraction_outcomes([network], texts, 64, length=4).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_text_references_train_on_their_subjects_windows():
    texts = ["a" * 300, "b", "c" * 10, "d" * 200]
    windows, owners = record_windows(texts, 64)
    ids = np.array([10, 11, 12, 13])
    records = TextRecords(record_ids=ids, subject_keys=np.array(["s0", "s1", "s2", "s0"], dtype=object),
                          features=windows, labels=ids[owners], texts=texts)
    trained = np.array([10, 11, 13])
    rows, labels = records.rows_for(trained)
    member = row_membership(records, trained, labels.numpy(), 4, seed=5)
    by_record = membership(["s0", "s1", "s0"], 4, 5)
    assert member.shape == (rows.shape[0], 4) and rows.shape[0] > len(trained)
    for row, label in enumerate(labels.tolist()):
        assert member[row].tolist() == by_record[trained.tolist().index(label)].tolist()


def _secrets(seed: int, remembered: float):
    """Forget texts that carry secrets: every model finds them harder than the holdout (mean token
    log-likelihood −3 against −2). The target scores each forget text `remembered` above what its
    OUT references give it (0: an exact retrain)."""
    rng = np.random.default_rng(seed)

    def side(n, level, shift):
        difficulty = rng.normal(level, 0.4, n)
        refs = difficulty[:, None] + rng.normal(0, 0.1, (n, 8))
        return difficulty + rng.normal(0, 0.1, n) + shift, refs

    forget_target, forget_refs = side(300, -3.0, remembered)
    null_target, null_refs = side(400, -2.0, 0.0)
    forget_out = ~membership([f"subject-{i}" for i in range(300)], 8, seed)
    inputs = reference_inputs(forget_target, forget_refs, forget_out, null_target, null_refs)
    forget, holdout = statistics(-forget_target, start=10_000), statistics(-null_target)
    return forget, holdout, inputs


def _loss_check(forget, holdout, inputs):
    checks = text_checks(forget, holdout, None, bits(300, 0), bits(200, 0), POLICY, inputs, inputs)
    return {c.name: c for c in checks}


def test_text_auc_is_judged_against_the_out_references_not_the_raw_holdout():
    # An exact retrain: against the raw holdout the secrets look unfamiliar (AUC far below 0.5)
    # and fail; against what the references that never saw them expect they pass.
    forget, holdout, inputs = _secrets(1, remembered=0.0)
    raw = text_checks(forget, holdout, None, bits(300, 0), bits(200, 0), POLICY)[0]
    assert raw.name == "mia_auc" and raw.verdict == "fail" and raw.estimate < -0.3
    calibrated = _loss_check(forget, holdout, inputs)
    assert calibrated["mia_auc"].verdict == "pass" and calibrated["mia_auc"].reference == "references"
    assert calibrated["min_k_plus_plus_auc"].verdict == "pass"
    # Half-unlearned: the forget texts still score 1 above their OUT references, which brings
    # them level with the holdout on the raw comparison (AUC near 0.5), and it fails calibrated.
    forget, holdout, inputs = _secrets(2, remembered=1.0)
    raw = text_checks(forget, holdout, None, bits(300, 0), bits(200, 0), POLICY)[0]
    assert abs(raw.estimate) < POLICY.mia_auc
    assert _loss_check(forget, holdout, inputs)["mia_auc"].verdict == "fail"
