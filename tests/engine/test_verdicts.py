"""Statistical verdicts (workers/engine/verification/: verdicts.py, checks.py, lira.py): every verdict is
produced by data built for it, and the intervals agree with known values."""

import math

import numpy as np
import pytest
from scipy import stats

from workers.engine.verification import lira, references
from workers.engine.verification.checks import (
    Policy,
    accuracy_gap_check,
    holdout_drop_check,
    membership_check,
    mia_auc_check,
    reference_gap_check,
    summary,
)
from workers.engine.verification.intervals import (
    calibrated_difference,
    clopper_pearson,
    delong_auc,
    paired_difference,
    proportion_difference,
    rate_difference,
)
from workers.engine.verification.scores import MembershipInputs
from workers.engine.verification.verdicts import decide, overall
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


def test_rate_difference_squares_and_adds_the_exact_limits():
    difference, (low, high) = rate_difference(12, 100, 4, 75, 0.1)
    a_low, a_high = clopper_pearson(12, 100, 0.1)
    b_low, b_high = clopper_pearson(4, 75, 0.1)
    assert difference == pytest.approx(0.12 - 4 / 75)
    assert high == pytest.approx(difference + math.hypot(a_high - 0.12, 4 / 75 - b_low))
    assert low == pytest.approx(difference - math.hypot(0.12 - a_low, b_high - 4 / 75))
    # Narrower than subtracting the rates' one-sided 1 − α/2 limits (the audit's interval before),
    # and still containing the estimate.
    a_low2, a_high2 = clopper_pearson(12, 100, 0.05)
    b_low2, b_high2 = clopper_pearson(4, 75, 0.05)
    assert a_low2 - b_high2 < low < difference < high < a_high2 - b_low2
    assert rate_difference(0, 0, 0, 0, 0.1) == (0.0, (-1.0, 1.0))


@pytest.mark.parametrize(("subjects", "null_subjects", "null_rate"), [(100, 75, 0.05), (25, 75, 0.1), (100, 30, 0.3)])
def test_rate_difference_holds_its_level_at_the_audit_tolerance(subjects, null_subjects, null_rate):
    """The audit's upper end is a one-sided 1 − α bound: where TPR − FPR sits exactly on the
    tolerance, it falls below the tolerance (a false pass) in at most α of draws, plus simulation
    error."""
    rng = np.random.default_rng(11)
    draws = 3000
    tpr = null_rate + POLICY.membership
    tp, fp = rng.binomial(subjects, tpr, draws), rng.binomial(null_subjects, null_rate, draws)
    passes = sum(rate_difference(int(a), subjects, int(b), null_subjects, 2 * POLICY.alpha)[1][1] < POLICY.membership
                 for a, b in zip(tp, fp))
    assert passes / draws <= POLICY.alpha + 0.01
    # Not vacuous: the bound is not so wide that it never passes anything closer to 0.
    near = sum(rate_difference(int(a), subjects, int(b), null_subjects, 2 * POLICY.alpha)[1][1] < POLICY.membership
               for a, b in zip(rng.binomial(subjects, null_rate, 200), rng.binomial(null_subjects, null_rate, 200)))
    assert near > 0


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
    assert lira.epsilon_lower_bound(0.5, 0.05) == pytest.approx(math.log(10))
    assert lira.epsilon_lower_bound(0.05, 0.05) == 0.0
    assert lira.epsilon_lower_bound(0.0, 0.5) == 0.0
    # The other inequality: a test that almost never flags unseen records but misses few members.
    assert lira.epsilon_lower_bound(0.9, 0.5) == pytest.approx(max(math.log(1.8), math.log(0.5 / 0.1)))


def test_logit_confidence_keeps_precision_near_one():
    proba = np.array([[1 - 1e-15, 1e-15], [0.5, 0.5], [0.2, 0.8]])
    found = lira.logit_confidence(proba, np.array([0, 0, 1]))
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
    inputs = MembershipInputs(forget_target, forget_refs, forget_out, null_target, null_refs, np.ones((400, k), dtype=bool))
    return inputs, np.sort(planted)


def _epsilon_from_counts(extra: dict, alpha: float) -> float:
    """max(0, ln(TPR_low / FPR_high), ln((1 − FPR_high) / (1 − TPR_low))) with each rate's
    one-sided 1 − α/2 Clopper-Pearson bound, from the audit's reported rates and counts."""
    n, null = extra["records"], extra["null_records"]
    tp, fp = round(extra["tpr"] * n), round(extra["fpr"] * null)
    tpr_low = 0.0 if tp == 0 else stats.beta.ppf(alpha / 2, tp, n - tp + 1)
    fpr_high = 1.0 if fp == null else stats.beta.ppf(1 - alpha / 2, fp + 1, null - fp)
    bounds = [0.0]
    if tpr_low > 0:
        bounds.append(math.log(tpr_low / fpr_high))
    if tpr_low < 1:
        bounds.append(math.log((1 - fpr_high) / (1 - tpr_low)))
    return max(bounds)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_audit_flags_the_five_memorised_records_the_population_auc_misses(seed):
    inputs, planted = _planted(seed)
    found = membership_check(inputs, POLICY)
    assert found.verdict == "fail" and found.attack == "offline_lira"
    assert found.extra["flagged"] == planted.tolist()
    # The ε bound is the DP inequalities at the one-sided Clopper-Pearson bounds of the counted
    # rates, recomputed here from the beta quantiles: five memorised records of fifty leave it
    # weak, fifty of fifty make it large.
    epsilon = found.extra["epsilon_lower_bound"]
    assert epsilon == pytest.approx(_epsilon_from_counts(found.extra, POLICY.alpha), abs=1e-6)
    assert epsilon < 0.5
    all_memorised, _ = _planted(seed, memorised=50)
    strong = membership_check(all_memorised, POLICY).extra
    assert strong["epsilon_lower_bound"] == pytest.approx(_epsilon_from_counts(strong, POLICY.alpha), abs=1e-6)
    assert strong["epsilon_lower_bound"] > 1.0
    # The loss-threshold attack on the same model: losses from the same scores (φ = −log(e^ℓ − 1)).
    loss = lambda phi: np.log1p(np.exp(-phi))
    population = mia_auc_check(loss(inputs.forget_target), loss(inputs.null_target), POLICY)
    assert population.verdict != "fail"


def test_audit_passes_a_model_that_forgot_and_is_inconclusive_without_references():
    inputs, _ = _planted(7, n_forget=600, memorised=0)
    forgot = membership_check(inputs, POLICY)
    assert forgot.verdict == "pass" and forgot.extra["flagged"] == [], forgot.reason
    assert forgot.extra["epsilon_lower_bound"] < 0.5
    # Erasures destroyed references: only one of each pair left, so no record has 2 OUT ones.
    starved = MembershipInputs(inputs.forget_target, inputs.forget_references[:, :2], inputs.forget_out[:, :2],
                          inputs.null_target, inputs.null_references[:, :2], inputs.null_out[:, :2])
    found = membership_check(starved, POLICY)
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


# Each verdict is a test at level α: intervals at 1 − 2α, utility checks block only on fail, and
# the accuracy gap calibrated record by record by the reference models.


def test_every_interval_is_at_one_minus_two_alpha_and_says_so():
    holdout = bits(2000, 1600)
    found = accuracy_gap_check(bits(600, 480, 1), holdout, POLICY)
    assert found.confidence == pytest.approx(0.9) and "90% interval" in found.reason
    assert found.interval == pytest.approx(proportion_difference(bits(600, 480, 1), holdout, 0.10)[1])
    # At α = 0.025 the same data gives the 95% interval, wider.
    strict = accuracy_gap_check(bits(600, 480, 1), holdout, Policy(alpha=0.025))
    assert strict.interval[1] - strict.interval[0] > found.interval[1] - found.interval[0]
    assert strict.as_dict()["confidence"] == pytest.approx(0.95)


def test_an_inconclusive_utility_check_is_recorded_without_blocking_and_a_failed_one_blocks():
    before = bits(600, 540)
    slightly = before.copy()
    # 30 records lost, 15 gained: 2.5 points net, within 3, but 600 records cannot show it.
    slightly[np.flatnonzero(before)[:30]] = 0
    slightly[np.flatnonzero(before == 0)[:15]] = 1
    drop = holdout_drop_check(before, slightly, POLICY)
    assert drop.verdict == "inconclusive" and drop.utility
    forgot = accuracy_gap_check(bits(600, 480, 1), bits(2000, 1600), POLICY)
    block = summary([forgot, drop], POLICY)
    assert block["verdict"] == "pass" and block["reasons"] == [] and block["notes"][0].startswith("inconclusive:")
    # An approximate result must prove its price as well: the same unproven drop blocks it.
    strict = summary([forgot, drop], POLICY, utility="required")
    assert strict["verdict"] == "inconclusive" and strict["notes"] == []
    assert strict["reasons"][0].startswith("inconclusive: holdout accuracy drop")
    assert summary([forgot, holdout_drop_check(before, before.copy(), POLICY)], POLICY,
                   utility="required")["verdict"] == "pass"
    worse = before.copy()
    worse[np.flatnonzero(before)[:90]] = 0  # 15 points lost
    failed = summary([forgot, holdout_drop_check(before, worse, POLICY)], POLICY)
    assert failed["verdict"] == "fail" and failed["reasons"][0].startswith("fail: holdout accuracy drop")
    # Without a forgetting check there is nothing to certify, whatever the utility says.
    assert overall([holdout_drop_check(before, before.copy(), POLICY)]) == "inconclusive"


def test_calibrated_difference_floors_the_forget_variance_and_matches_welch():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.1, 1, 4000), rng.normal(0, 1, 6000)
    estimate, (low, high) = calibrated_difference(a, b, 0.10)
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert estimate == pytest.approx(a.mean() - b.mean())
    assert (high - low) / 2 == pytest.approx(stats.norm.ppf(0.95) * se, rel=0.02)
    # Five forget records that happen to agree exactly: the null's spread still applies.
    estimate, (low, high) = calibrated_difference(np.zeros(5), rng.choice([-1.0, 0.0, 1.0], 600), 0.10)
    assert high - low > 0.5
    assert calibrated_difference([0.0], [0.0, 1.0], 0.10)[1] == (-1.0, 1.0)
    assert calibrated_difference([], [0.0], 0.10) is None


def _calibrated(forget_target, forget_refs, holdout_target, holdout_refs, out=None):
    forget_refs, holdout_refs = np.asarray(forget_refs, dtype=float), np.asarray(holdout_refs, dtype=float)
    out = np.ones_like(forget_refs, dtype=bool) if out is None else out
    zeros_f, zeros_h = np.zeros(len(forget_target)), np.zeros(len(holdout_target))
    inputs = MembershipInputs(zeros_f, forget_refs, out, zeros_h, holdout_refs, np.ones_like(holdout_refs, dtype=bool),
                         forget_references_correct=forget_refs, null_references_correct=holdout_refs)
    return reference_gap_check(np.asarray(forget_target, dtype=float), inputs, np.asarray(holdout_target, dtype=float),
                               POLICY)


def test_calibrated_gap_sees_through_hard_forget_records_and_catches_remembered_ones():
    rng = np.random.default_rng(4)
    holdout_p = rng.uniform(0.6, 1.0, 2000)
    holdout_target = (rng.uniform(size=2000) < holdout_p).astype(float)
    holdout_refs = (rng.uniform(size=(2000, 4)) < holdout_p[:, None] - 0.05).astype(float)  # half the data: worse
    # Forget records far harder than the holdout, for the target and the references alike; 3000
    # of them, so that an unseen set's interval fits within the 5-point tolerance (at 500 it is
    # about ±0.045 wide and a genuinely unseen set is inconclusive as often as not).
    hard_p = rng.uniform(0.2, 0.6, 3000)
    forget_target = (rng.uniform(size=3000) < hard_p).astype(float)
    forget_refs = (rng.uniform(size=(3000, 4)) < hard_p[:, None] - 0.05).astype(float)
    raw = accuracy_gap_check(forget_target, holdout_target, POLICY)
    calibrated = _calibrated(forget_target, forget_refs, holdout_target, holdout_refs)
    assert raw.verdict == "fail" and raw.estimate < -0.3  # the raw gap blames the records' difficulty
    assert calibrated.verdict == "pass" and calibrated.reference == "references" and calibrated.test == "welch"
    # The same hard records, remembered by the target: right where no unseen model is.
    remembered = _calibrated(np.ones(3000), forget_refs, holdout_target, holdout_refs)
    assert remembered.verdict == "fail" and remembered.interval[0] > POLICY.reference_gap
    few = _calibrated(forget_target[:8], forget_refs[:8], holdout_target, holdout_refs)
    assert few.verdict == "inconclusive" and "too little evidence" in few.reason
    # Only the references that never saw a record count for it; with none the check cannot run.
    out = np.ones((3000, 4), dtype=bool)
    out[0] = False
    assert _calibrated(forget_target, forget_refs, holdout_target, holdout_refs, out).verdict == "inconclusive"


def test_forget_loss_targets_are_the_out_references_loss_shifted_to_the_target():
    import torch
    from torch import nn

    class Constant(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits, dtype=torch.float32)

        def forward(self, x):
            return self.logits.expand(x.shape[0], -1)

    class Family:
        @staticmethod
        def predict_proba(network, x):
            return torch.softmax(network(x), dim=1)

    x, y = torch.zeros((3, 2)), torch.tensor([0, 0, 1])
    unseen = (torch.zeros((4, 2)), torch.tensor([0, 1, 0, 1]))
    sure, unsure = Constant([2.0, 0.0]), Constant([0.0, 0.0])
    out = np.array([[True, False], [False, True], [True, True]])
    found = references.forget_loss_targets(Family, unsure, [sure, unsure], (x, y), out, unseen)
    loss = lambda p: -math.log(p)  # noqa: E731
    p_sure = math.exp(2) / (math.exp(2) + 1)
    # Unseen: the target (uniform) loses ln 2 per record; the references on average the same.
    shift = loss(0.5) - (0.5 * (loss(p_sure) + loss(1 - p_sure)) + loss(0.5)) / 2
    expected = [loss(p_sure) + shift, loss(0.5) + shift, (loss(1 - p_sure) + loss(0.5)) / 2 + shift]
    assert found == pytest.approx(np.maximum(expected, 0))
    assert references.forget_loss_targets(Family, unsure, [sure, unsure], (x, y), np.zeros((3, 2), bool), unseen) is None
