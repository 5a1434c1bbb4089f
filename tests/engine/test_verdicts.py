"""Statistical verdicts (workers/engine/verdicts.py, forgetting.py, audit.py): every verdict is
produced by data built for it, and the intervals agree with known values."""

import math

import numpy as np
import pytest
from scipy import stats

from workers.engine import audit, references
from workers.engine.forgetting import (
    AuditInputs,
    Policy,
    accuracy_gap_check,
    audit_check,
    holdout_drop_check,
    mia_auc_check,
    summary,
)
from workers.engine.verdicts import (
    clopper_pearson,
    decide,
    delong_auc,
    overall,
    paired_difference,
    proportion_difference,
)
from workers.engine.unlearning.verification import mia_auc

POLICY = Policy()


def bits(n: int, ones: int, seed: int = 0) -> np.ndarray:
    values = np.zeros(n)
    values[:ones] = 1
    return np.random.default_rng(seed).permutation(values)


def test_decide_reads_the_interval_against_the_tolerance():
    assert decide(-0.02, 0.04, 0.05, two_sided=True) == "pass"
    assert decide(0.06, 0.2, 0.05, two_sided=True) == "fail"
    assert decide(-0.3, -0.06, 0.05, two_sided=True) == "fail"  # far below: stands out the other way
    assert decide(0.01, 0.09, 0.05, two_sided=True) == "inconclusive"
    assert decide(-0.5, 0.04, 0.05, two_sided=False) == "pass"
    assert decide(0.051, 0.2, 0.05, two_sided=False) == "fail"
    assert decide(0.0, 0.051, 0.05, two_sided=False) == "inconclusive"


def test_clopper_pearson_matches_closed_forms():
    low, high = clopper_pearson(0, 10, 0.05)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = clopper_pearson(10, 10, 0.05)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10))
    assert clopper_pearson(0, 0, 0.05) == (0.0, 1.0)


def test_delong_auc_agrees_with_mann_whitney_and_a_bootstrap():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(0.4, 1, 200), rng.normal(0, 1, 300)
    auc, (low, high) = delong_auc(members, nonmembers, 0.05)
    assert auc == pytest.approx(mia_auc(-members, -nonmembers))
    boot = [mia_auc(-rng.choice(members, 200), -rng.choice(nonmembers, 300)) for _ in range(400)]
    assert (high - low) / 2 == pytest.approx(1.96 * np.std(boot), rel=0.2)
    assert delong_auc([1.0], [0.0, 1.0], 0.05)[1] == (0.0, 1.0)  # one member: nothing to say
    assert delong_auc([], [1.0], 0.05) is None


def test_newcombe_interval_stays_wide_for_one_record():
    estimate, (low, high) = proportion_difference([1.0], bits(1000, 800), 0.05)
    assert estimate == pytest.approx(0.2) and low < -0.5 and high > 0.19
    estimate, (low, high) = proportion_difference(bits(400, 200), bits(400, 200), 0.05)
    assert estimate == 0 and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 200), rel=0.05)


def test_accuracy_gap_pass_fail_inconclusive():
    holdout = bits(2000, 1600)
    passed = accuracy_gap_check(bits(600, 480, 1), holdout, POLICY)
    failed = accuracy_gap_check(bits(600, 600), holdout, POLICY)
    small = accuracy_gap_check(bits(6, 6), holdout, POLICY)
    assert (passed.verdict, failed.verdict, small.verdict) == ("pass", "fail", "inconclusive")
    assert failed.interval[0] > POLICY.forget_gap and small.interval[0] < POLICY.forget_gap < small.interval[1]
    assert "too little evidence" in small.reason and small.n == 6 and small.reference == "holdout"


def test_mia_auc_pass_fail_inconclusive():
    rng = np.random.default_rng(5)
    holdout = rng.exponential(1.0, 3000)
    assert mia_auc_check(rng.exponential(1.0, 2000), holdout, POLICY).verdict == "pass"
    remembered = mia_auc_check(rng.exponential(0.2, 300), holdout, POLICY)  # members' loss much lower
    assert remembered.verdict == "fail" and remembered.extra["auc"] > 0.7
    assert mia_auc_check(rng.exponential(1.0, 10), holdout, POLICY).verdict == "inconclusive"
    assert mia_auc_check(np.zeros(0), holdout, POLICY).verdict == "inconclusive"


def test_holdout_drop_is_paired_and_one_sided():
    before = bits(1000, 900)
    same = holdout_drop_check(before, before.copy(), POLICY)
    assert same.verdict == "pass" and same.interval == (0.0, 0.0)
    worse = before.copy()
    worse[np.flatnonzero(before)[:100]] = 0  # 10 points lost
    assert holdout_drop_check(before, worse, POLICY).verdict == "fail"
    better = np.ones(1000)
    assert holdout_drop_check(before, better, POLICY).verdict == "pass"
    assert paired_difference([1.0], [0.0], 0.05)[1] == (-1.0, 1.0)


def test_overall_verdict_and_block():
    holdout = bits(2000, 1600)
    checks = [accuracy_gap_check(bits(600, 480, 1), holdout, POLICY), accuracy_gap_check(bits(6, 6), holdout, POLICY)]
    assert overall(checks) == "inconclusive" and overall(checks[:1]) == "pass" and overall([]) == "inconclusive"
    block = summary(checks, POLICY)
    assert block["verdict"] == "inconclusive" and len(block["reasons"]) == 1
    assert block["reasons"][0].startswith("inconclusive:") and block["alpha"] == 0.05
    assert {"name", "attack", "test", "estimate", "interval", "alpha", "n", "reference", "verdict"} <= set(block["checks"][0])


def test_epsilon_lower_bound():
    assert audit.epsilon_lower_bound(0.5, 0.05) == pytest.approx(math.log(10))
    assert audit.epsilon_lower_bound(0.05, 0.05) == 0.0
    assert audit.epsilon_lower_bound(0.0, 0.5) == 0.0
    # The other inequality: a test that almost never flags unseen records but misses few members.
    assert audit.epsilon_lower_bound(0.9, 0.5) == pytest.approx(max(math.log(1.8), math.log(0.5 / 0.1)))


def test_logit_confidence_keeps_precision_near_one():
    proba = np.array([[1 - 1e-15, 1e-15], [0.5, 0.5], [0.2, 0.8]])
    found = audit.logit_confidence(proba, np.array([0, 0, 1]))
    assert found[0] == pytest.approx(math.log((1 - 1e-15) / 1e-15)) and found[1] == 0.0
    assert found[2] == pytest.approx(math.log(4))


def _planted(seed: int, n_forget: int = 50, memorised: int = 5, k: int = 8):
    """Scores of a model that forgot all but `memorised` of its forget records: records differ
    widely in difficulty (the OUT score), so population figures drown the few memorised ones."""
    rng = np.random.default_rng(seed)

    def side(n, shift):
        difficulty = rng.normal(0, 3, n)
        refs = difficulty[:, None] + rng.normal(0, 0.5, (n, k))
        target = difficulty + 0.3 + rng.normal(0, 0.5, n) + shift  # trained on more data: a bit more confident
        return target, refs

    shift = np.zeros(n_forget)
    planted = rng.choice(n_forget, memorised, replace=False)
    shift[planted] = 4.0
    forget_target, forget_refs = side(n_forget, shift)
    null_target, null_refs = side(400, np.zeros(400))
    keys = [f"subject-{i}" for i in range(n_forget)]
    forget_out = ~references.membership(keys, k, seed)
    inputs = AuditInputs(forget_target, forget_refs, forget_out, null_target, null_refs, np.ones((400, k), dtype=bool))
    return inputs, np.sort(planted)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_audit_flags_the_five_memorised_records_the_population_auc_misses(seed):
    inputs, planted = _planted(seed)
    found = audit_check(inputs, POLICY)
    assert found.verdict == "fail" and found.attack == "offline_lira"
    assert found.extra["flagged"] == planted.tolist()
    # Five records are too few for a lower bound on ε above 0; fifty memorised ones are not.
    assert found.extra["epsilon_lower_bound"] >= 0
    all_memorised, _ = _planted(seed, memorised=50)
    assert audit_check(all_memorised, POLICY).extra["epsilon_lower_bound"] > 1.0
    # The loss-threshold attack on the same model: losses from the same scores (φ = −log(e^ℓ − 1)).
    loss = lambda phi: np.log1p(np.exp(-phi))
    population = mia_auc_check(loss(inputs.forget_target), loss(inputs.null_target), POLICY)
    assert population.verdict != "fail"


def test_audit_passes_a_model_that_forgot_and_is_inconclusive_without_references():
    inputs, _ = _planted(7, n_forget=600, memorised=0)
    forgot = audit_check(inputs, POLICY)
    assert forgot.verdict == "pass" and forgot.extra["flagged"] == [], forgot.reason
    assert forgot.extra["epsilon_lower_bound"] < 0.5
    # Erasures destroyed references: only one of each pair left, so no record has 2 OUT ones.
    starved = AuditInputs(inputs.forget_target, inputs.forget_references[:, :2], inputs.forget_out[:, :2],
                          inputs.null_target, inputs.null_references[:, :2], inputs.null_out[:, :2])
    found = audit_check(starved, POLICY)
    assert found.verdict == "inconclusive" and "too few references" in found.reason


def test_reference_membership_comes_in_complementary_pairs():
    keys = [f"k{i % 30}" for i in range(90)]
    member = references.membership(keys, 8, seed=4)
    assert (member.sum(axis=1) == 4).all()
    assert (member[:, 0::2] ^ member[:, 1::2]).all()
    assert member[0].tolist() == member[30].tolist()  # by subject, not by record
    share = member.mean(axis=0)
    assert ((share > 0.25) & (share < 0.75)).all()
    held = references.holding(["k3"], 8, seed=4)
    assert len(held) == 4 and held == np.flatnonzero(member[3]).tolist()
    with pytest.raises(ValueError):
        references.membership(keys, 3, seed=4)


def test_t_tail_is_used_for_small_nulls():
    # The p-value of the audit uses the null's degrees of freedom: heavier than normal.
    assert stats.t.sf(3.0, df=20) > stats.norm.sf(3.0)
