"""The LiRA audit (workers/engine/verification/lira.py) on generated scores: the null is scored
against one reference per complementary pair, as the tested records are; records are judged per
subject (Stouffer's z, Holm over subjects); an ε bound above 0 fails the check."""

import numpy as np
import pytest

from workers.engine.verification import lira
from workers.engine.verification.checks import Policy, membership_check
from workers.engine.verification.scores import MembershipInputs
from tests.engine.lira_scores import K, RECORDS_PER_SUBJECT, _inputs

POLICY = Policy()


def _old_null_epsilon(inputs: MembershipInputs) -> float:
    """ε of the null as it was: every null record against references 0–3 (two pairs)."""
    forget = lira.residuals(inputs.forget_target, inputs.forget_references, inputs.forget_out)
    first_four = np.zeros_like(inputs.null_out)
    first_four[:, :4] = True
    null = lira.residuals(inputs.null_target, inputs.null_references, first_four)
    found = lira.lira_check(forget, null, alpha=POLICY.alpha, tolerance=POLICY.membership)
    return float(found.extra["epsilon_lower_bound"])


def test_exact_retrains_prove_no_leakage_in_at_least_95_percent_of_seeds():
    seeds = range(40)
    now = [membership_check(_inputs(seed, pair_spread=1.5), POLICY).extra["epsilon_lower_bound"] for seed in seeds]
    before = [_old_null_epsilon(_inputs(seed, pair_spread=1.5)) for seed in seeds]
    # The generated pairs reproduce the fault: the old null gave a false proof of leakage.
    assert sum(e > 0 for e in before) >= 30, before
    assert sum(e == 0 for e in now) >= 0.95 * len(now), now


def test_matched_null_takes_one_reference_per_complementary_pair():
    inputs = _inputs(3)
    matched = lira.matched_null_out(inputs.forget_out, inputs.null_out)
    assert (matched.sum(axis=1) == K // 2).all()
    assert (matched[:, 0::2] ^ matched[:, 1::2]).all()
    # A SISA null record keeps its own mask: one shard drawn for it saw it.
    shard_null = np.ones((5, 4), dtype=bool)
    shard_null[np.arange(5), [0, 1, 2, 3, 0]] = False
    assert (lira.matched_null_out(np.ones((3, 4), dtype=bool), shard_null) == shard_null).all()


def test_an_epsilon_bound_above_zero_fails_within_the_tolerance():
    # Every forget record a little more familiar: TPR − FPR ≈ 0.07, inside the 0.15 tolerance,
    # but on 4,000 records its lower end, and the ε bound, are above 0.
    subjects = 1000
    inputs = _inputs(11, subjects, shift=np.full(subjects * RECORDS_PER_SUBJECT, 0.35), labelled=False)
    found = membership_check(inputs, POLICY)
    low, high = found.interval
    assert 0 < low and high <= POLICY.membership
    assert found.extra["epsilon_lower_bound"] > 0 and found.extra["flagged"] == []
    assert found.verdict == "fail" and "ε lower bound" in found.reason


def _memorised(seed: int, hidden: int = 5, z: float = 3.5):
    """100 subjects of 4 records; `hidden` of them memorised, each record ≈ z sd above unseen."""
    planted = np.sort(np.random.default_rng(1000 + seed).choice(100, hidden, replace=False))
    shift = np.zeros(100 * RECORDS_PER_SUBJECT)
    # The target's own noise is 0.8 sd before the references' spread: z null-sd over it.
    shift[np.isin(np.repeat(np.arange(100), RECORDS_PER_SUBJECT), planted)] = z * 0.95
    return _inputs(seed, shift=shift), planted


@pytest.mark.parametrize("seed", range(5))
def test_five_memorised_subjects_among_a_hundred_are_flagged(seed):
    inputs, planted = _memorised(seed)
    found = membership_check(inputs, POLICY, record_ids=np.arange(400))
    assert found.verdict == "fail"
    owners = inputs.forget_subjects[found.extra["flagged"]]
    assert np.unique(owners).tolist() == planted.tolist()
    assert found.extra["subjects_flagged"] == 5 and found.extra["subjects"] == 100
    # Record by record, as before, Holm over 400 records finds too few of them.
    by_record = membership_check(
        MembershipInputs(inputs.forget_target, inputs.forget_references, inputs.forget_out, inputs.null_target,
                         inputs.null_references, inputs.null_out), POLICY)
    assert len(by_record.extra["flagged"]) < 20


def test_subject_level_size_with_correlated_records_is_at_most_alpha_plus_a_point():
    # 200 exact retrains whose subjects' records correlate at ρ = 0.6 (near-duplicates).
    simulations = 200
    flagged = correlations = 0.0
    for seed in range(simulations):
        found = membership_check(_inputs(5000 + seed, rho=0.6), POLICY)
        flagged += found.extra["subjects_flagged"] > 0
        correlations += found.extra["within_subject_correlation"]
    assert flagged / simulations <= POLICY.alpha + 0.01
    assert 0.3 < correlations / simulations < 0.8


def test_an_over_forgotten_set_fails_as_too_unfamiliar():
    # Half the forget subjects pushed 4 sd below what unseen records score: the one-sided audit
    # passed this; per subject, two-sided, it is as recognisable as a memorised one.
    shift = np.zeros(100 * RECORDS_PER_SUBJECT)
    shift[: 50 * RECORDS_PER_SUBJECT] = -4 * 0.95
    inputs = _inputs(21, shift=shift)
    found = membership_check(inputs, POLICY, record_ids=np.arange(400))
    assert found.verdict == "fail" and "less familiar" in found.reason
    assert found.extra["subjects_unfamiliar"] >= 45 and found.extra["subjects_flagged"] == 0
    assert set(inputs.forget_subjects[found.extra["unfamiliar"]].tolist()) <= set(range(50))
    # The same forget set left alone (an exact retrain) passes.
    assert membership_check(_inputs(21), POLICY).verdict == "pass"


def test_a_collapse_of_the_spread_fails_though_no_subject_stands_out():
    # Every forget record pressed onto the score its OUT references give it, as a stopping rule
    # aimed at the references would: no subject is far from unseen, but none varies either.
    inputs = _inputs(22)
    out = inputs.forget_out
    out_mean = np.where(out, inputs.forget_references, 0).sum(axis=1) / out.sum(axis=1)
    pressed = MembershipInputs(out_mean + 0.3, inputs.forget_references, out, inputs.null_target,
                               inputs.null_references, inputs.null_out, forget_subjects=inputs.forget_subjects,
                               null_subjects=inputs.null_subjects)
    found = membership_check(pressed, POLICY)
    assert found.extra["subjects_flagged"] == 0 and found.extra["subjects_unfamiliar"] == 0
    assert found.extra["spread_ratio_upper"] < lira.MIN_SPREAD_RATIO
    assert found.verdict == "fail" and "collapse" in found.reason
    untouched = membership_check(inputs, POLICY)
    assert untouched.extra["spread_ratio_upper"] >= lira.MIN_SPREAD_RATIO and untouched.verdict == "pass"


def test_the_rates_count_subjects_not_records():
    found = membership_check(_inputs(23, rho=0.6), POLICY)
    assert found.extra["subjects"] == 100 and found.extra["null_subjects"] == 100
    # A rate over 100 subjects moves in steps of 1/100.
    assert round(found.extra["tpr"] * 100, 6) == int(round(found.extra["tpr"] * 100))
