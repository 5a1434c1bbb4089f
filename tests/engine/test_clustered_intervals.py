"""Intervals that count subjects, not records (workers/engine/verification/intervals.py): on
records that share their subject's latent the clustered interval is wider than the one that
counts records as independent; with one record per subject the two agree."""

import numpy as np
import pytest

from workers.engine.verification.checks import Policy, Subjects, accuracy_gap_check, mia_auc_check
from workers.engine.verification.intervals import (
    connected_clusters,
    calibrated_difference,
    delong_auc,
    mean_variance,
    paired_difference,
    proportion_difference,
)

RECORDS = 4


def correlated(rng, subjects: int, rho: float, shift: float = 0.0):
    """`subjects` × 4 scores, each subject's records sharing a latent with correlation rho."""
    shared = np.repeat(rng.normal(0, 1, subjects), RECORDS)
    scores = shift + np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(0, 1, subjects * RECORDS)
    return scores, np.repeat(np.arange(subjects), RECORDS)


def width(found):
    return found[1][1] - found[1][0]


def test_the_clustered_auc_interval_is_wider_on_correlated_records():
    rng = np.random.default_rng(0)
    members, member_subjects = correlated(rng, 60, rho=0.8, shift=0.3)
    nonmembers, nonmember_subjects = correlated(rng, 80, rho=0.8)
    naive = delong_auc(members, nonmembers, 0.10)
    clustered = delong_auc(members, nonmembers, 0.10, member_clusters=member_subjects,
                           nonmember_clusters=nonmember_subjects + 1000)
    assert clustered[0] == naive[0]
    assert width(clustered) > 1.4 * width(naive)


def test_the_clustered_mean_differences_are_wider_on_correlated_records():
    rng = np.random.default_rng(1)
    a, a_subjects = correlated(rng, 50, rho=0.9)
    b, b_subjects = correlated(rng, 50, rho=0.9)
    assert width(calibrated_difference(a, b, 0.10, forget_clusters=a_subjects, null_clusters=b_subjects)) \
        > 1.4 * width(calibrated_difference(a, b, 0.10))
    bits_a, bits_b = (a > 0).astype(float), (b > 0.2).astype(float)
    assert width(proportion_difference(bits_a, bits_b, 0.10, a_clusters=a_subjects, b_clusters=b_subjects)) \
        > 1.3 * width(proportion_difference(bits_a, bits_b, 0.10))
    before, after = (a > -0.5).astype(float), (a > 0.5).astype(float)
    assert width(paired_difference(before, after, 0.10, clusters=a_subjects)) \
        > 1.3 * width(paired_difference(before, after, 0.10))


def test_one_record_per_subject_gives_the_independent_interval():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.2, 1, 300), rng.normal(0, 1, 400)
    own_a, own_b = np.arange(300), np.arange(400) + 300
    assert mean_variance(a, own_a) == pytest.approx(a.var(ddof=1) / a.size)
    assert delong_auc(a, b, 0.1, member_clusters=own_a, nonmember_clusters=own_b)[1] == pytest.approx(
        delong_auc(a, b, 0.1)[1])
    assert calibrated_difference(a, b, 0.1, forget_clusters=own_a, null_clusters=own_b)[1] == pytest.approx(
        calibrated_difference(a, b, 0.1)[1])
    # A single subject's records are one unit: nothing is known of the spread between subjects.
    assert delong_auc(a[:4], b, 0.1, member_clusters=np.zeros(4))[1] == (0.0, 1.0)


def test_checks_with_subjects_say_so_and_are_wider():
    rng = np.random.default_rng(3)
    forget, forget_subjects = correlated(rng, 40, rho=0.8)
    holdout, holdout_subjects = correlated(rng, 100, rho=0.8)
    subjects = Subjects(forget_subjects, holdout_subjects + 1000)
    naive = mia_auc_check(-forget, -holdout, Policy())
    clustered = mia_auc_check(-forget, -holdout, Policy(), subjects)
    assert clustered.extra["clustered_by_subject"] is True and naive.extra["clustered_by_subject"] is False
    assert clustered.interval[1] - clustered.interval[0] > naive.interval[1] - naive.interval[0]
    gap = accuracy_gap_check((forget > 0).astype(float), (holdout > 0).astype(float), Policy(), subjects)
    assert gap.extra["clustered_by_subject"] is True


def test_the_clustered_auc_check_keeps_its_size_at_the_tolerance_boundary():
    # Records of a subject share a latent (ρ = 0.6); the forget scores are shifted so that the
    # AUC − 0.5 is exactly the tolerance. A pass there is a false pass; it may happen at most
    # α (+ a point for the simulation) of the time, which the naive interval does not keep.
    policy = Policy()
    shift = _shift_for(0.5 + policy.mia_auc)
    passes = {"naive": 0, "clustered": 0}
    simulations = 200
    for seed in range(simulations):
        rng = np.random.default_rng(10_000 + seed)
        forget, forget_subjects = correlated(rng, 25, rho=0.6, shift=shift)
        holdout, holdout_subjects = correlated(rng, 100, rho=0.6)
        passes["naive"] += mia_auc_check(-forget, -holdout, policy).verdict == "pass"
        passes["clustered"] += mia_auc_check(-forget, -holdout, policy,
                                             Subjects(forget_subjects, holdout_subjects + 1000)).verdict == "pass"
    assert passes["clustered"] / simulations <= policy.alpha + 0.01, passes
    assert passes["naive"] > passes["clustered"], passes


def _shift_for(auc: float) -> float:
    """Mean shift of unit-variance normal scores whose AUC against unshifted ones is `auc`:
    AUC = Φ(shift / √2)."""
    from scipy import stats

    return float(np.sqrt(2) * stats.norm.ppf(auc))


def test_records_sharing_a_subject_or_a_source_are_one_cluster():
    subjects = ["ann", "bob", "cat", "cat", "dan", "eve"]
    sources = ["a", "b", None, "a", None, "c"]
    codes = connected_clusters(subjects, sources, size=6)
    # ann–(a)–cat–cat; bob alone; dan alone (no source joins nothing); eve alone.
    assert codes[0] == codes[2] == codes[3]
    assert len({codes[0], codes[1], codes[4], codes[5]}) == 4
    assert sorted(set(codes.tolist())) == [0, 1, 2, 3]
    # Never finer than either labelling, and only one labelling gives its own clusters.
    assert (connected_clusters(subjects, None, size=6) == connected_clusters(subjects, size=6)).all()
    assert len(set(connected_clusters(subjects, size=6).tolist())) == 5
    with pytest.raises(ValueError):
        connected_clusters(subjects, sources[:3], size=6)


def _sliced(rng, shift: float, sources: int = 20, per_source: int = 6, rho: float = 0.5):
    """A remediated slice: `sources` × `per_source` records, two per subject, the records of a
    source sharing the source's latent (ρ), as a poisoning vendor's rows resemble each other."""
    n = sources * per_source
    source = np.repeat(np.arange(sources), per_source)
    scores = shift + np.sqrt(rho) * np.repeat(rng.normal(0, 1, sources), per_source) \
        + np.sqrt(1 - rho) * rng.normal(0, 1, n)
    return scores, np.arange(n) // 2, np.asarray([f"vendor-{s}" for s in source], dtype=object)


def test_clustering_the_slice_by_source_too_keeps_the_size_that_subjects_alone_lose():
    # At the tolerance boundary (AUC − 0.5 = tolerance) a pass is a false pass: with the slice
    # clustered by subject only, the source's shared latent makes the interval too narrow and
    # the check passes far more often than α; clustered by subject and source it keeps α
    # (+ a point for the simulation), and its interval is wider.
    policy = Policy()
    shift = _shift_for(0.5 + policy.mia_auc)
    passes = {"subject": 0, "subject+source": 0}
    widths = {"subject": 0.0, "subject+source": 0.0}
    simulations = 200
    for seed in range(simulations):
        rng = np.random.default_rng(20_000 + seed)
        forget, subjects, sources = _sliced(rng, shift)
        holdout = rng.normal(0, 1, 400)
        holdout_subjects = np.arange(400) + 10_000
        for name, labels in (("subject", subjects),
                             ("subject+source", connected_clusters(subjects, sources, size=len(forget)))):
            found = mia_auc_check(-forget, -holdout, policy, Subjects(labels, holdout_subjects))
            passes[name] += found.verdict == "pass"
            widths[name] += found.interval[1] - found.interval[0]
    assert passes["subject+source"] / simulations <= policy.alpha + 0.01, passes
    assert passes["subject"] / simulations > 2 * policy.alpha, passes
    assert widths["subject+source"] > 1.3 * widths["subject"], widths


def test_a_remediated_slice_is_clustered_by_source_where_one_is_declared():
    from types import SimpleNamespace

    from workers.engine.unlearning.verification import forget_clusters

    ids = np.asarray([10, 11, 12, 13], dtype=np.int64)
    keys = ["s1", "s2", "s3", "s4"]
    by_subject = forget_clusters(SimpleNamespace(forget_sources=None), ids, keys)
    assert list(by_subject) == keys
    joined = forget_clusters(SimpleNamespace(forget_sources={10: "vendor-b", 11: "vendor-b", 12: None, 13: "x"}),
                             ids, keys)
    assert joined[0] == joined[1] and len(set(joined.tolist())) == 3
