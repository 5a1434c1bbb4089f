"""Confidence intervals of the verdicts' estimates (verdicts.py decides on them).

Each function takes the two-sided level 1 − a it is asked for:
- difference of two independent proportions: Newcombe's hybrid Wilson score interval
  (Newcombe 1998, method 10), which stays honest for one or two records where a bootstrap
  collapses to a point;
- difference of paired proportions (the same records before and after): a percentile bootstrap
  over records;
- AUC: DeLong et al. 1988, from the structural components of the Mann-Whitney statistic,
  made conservative for small forget sets (see `delong_auc`);
- a rate: Clopper-Pearson;
- difference of two independent rates counted in whole units (subjects): Newcombe's
  square-and-add recovery of variance (MOVER, Zou and Donner 2008) from each rate's exact
  Clopper-Pearson limits (`rate_difference`). It keeps the exact limits' guarantee for each rate
  while combining them as independent errors combine, so it is far tighter than subtracting one
  rate's limits from the other's (which spends α on a corner both ends cannot reach at once).

A subject's records are often near-duplicates, so records are no independent evidence: each
function takes the records' clusters (their subjects) and then treats the cluster as the unit.
The variance of a mean becomes the cluster-robust (sandwich) one, which is the ordinary
`var/n` with one record per cluster; DeLong's components are summed per cluster as Obuchowski
(1997) clusters them; Newcombe's counts are divided by their design effect (Rao and Scott 1992);
the paired bootstrap resamples clusters. Student's quantiles take the clusters' degrees of
freedom. Without clusters every record is its own.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats

Interval = tuple[float, float]
BOOTSTRAP_RESAMPLES = 2000


def clopper_pearson(successes: int, trials: int, alpha: float) -> Interval:
    """Exact two-sided interval of a binomial rate; (0, 1) without trials."""
    if trials <= 0:
        return (0.0, 1.0)
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return (low, high)


def rate_difference(a_successes: int, a_trials: int, b_successes: int, b_trials: int,
                    alpha: float) -> tuple[float, Interval]:
    """a_successes/a_trials − b_successes/b_trials with its MOVER interval at two-sided level 1 − alpha,
    from each rate's Clopper-Pearson limits at that level: the upper end is
    d + √((a_high − a)² + (b − b_low)²), the lower end its mirror. Without trials on a side that
    rate is unknown ([0, 1])."""
    a = a_successes / a_trials if a_trials > 0 else 0.0
    b = b_successes / b_trials if b_trials > 0 else 0.0
    return square_and_add(a, clopper_pearson(a_successes, a_trials, alpha),
                          b, clopper_pearson(b_successes, b_trials, alpha))


def square_and_add(a: float, a_limits: Interval, b: float, b_limits: Interval) -> tuple[float, Interval]:
    """a − b with Newcombe's square-and-add interval from each rate's own limits: the upper end
    is d + √((a_high − a)² + (b − b_low)²), the lower end its mirror, clipped to [−1, 1]."""
    (a_low, a_high), (b_low, b_high) = a_limits, b_limits
    difference = a - b
    low = difference - math.sqrt((a - a_low) ** 2 + (b_high - b) ** 2)
    high = difference + math.sqrt((a_high - a) ** 2 + (b - b_low) ** 2)
    return difference, (max(-1.0, low), min(1.0, high))


def wilson(successes: float, trials: float, alpha: float) -> Interval:
    """Wilson's score interval; `successes` and `trials` may be effective (non-integer) counts."""
    if trials <= 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cluster_codes(clusters: npt.ArrayLike | None, size: int) -> npt.NDArray[np.int64]:
    """Each record's cluster as an index 0..C−1; every record its own cluster without labels."""
    if clusters is None:
        return np.arange(size, dtype=np.int64)
    labels = np.asarray(clusters)
    if labels.shape[0] != size:
        raise ValueError("every record needs its cluster")
    _, codes = np.unique(labels, return_inverse=True)
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def connected_clusters(*labellings: npt.ArrayLike | None, size: int) -> npt.NDArray[np.int64]:
    """Clusters that join every labelling: two records are in one cluster when they share a label
    of any labelling, directly or through other records (the connected components of the
    records-and-labels graph). A remediated slice passes its records' subjects and sources, so a
    source whose records are correlated counts as one unit even across subjects, which is
    conservative: the components are never finer than either labelling. A label of None (a
    record without a source, say) joins nothing. Answers codes 0..C−1, as `cluster_codes`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows: list[npt.NDArray[np.int64]] = []
    columns: list[npt.NDArray[np.int64]] = []
    nodes = size
    for labelling in labellings:
        if labelling is None:
            continue
        labels = np.asarray(labelling, dtype=object).reshape(-1)
        if labels.shape[0] != size:
            raise ValueError("every record needs its label in every labelling")
        known = np.flatnonzero(np.asarray([label is not None for label in labels.tolist()], dtype=bool))
        if not known.size:
            continue
        _, codes = np.unique(labels[known].astype(str), return_inverse=True)
        rows.append(known.astype(np.int64))
        columns.append(nodes + np.asarray(codes, dtype=np.int64).reshape(-1))
        nodes += int(codes.max()) + 1
    if not rows:
        return np.arange(size, dtype=np.int64)
    row, column = np.concatenate(rows), np.concatenate(columns)
    graph = coo_matrix((np.ones(row.size, dtype=np.int8), (row, column)), shape=(nodes, nodes))
    _, components = connected_components(graph, directed=False)
    _, codes = np.unique(np.asarray(components[:size]), return_inverse=True)
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def mean_variance(values: npt.ArrayLike, clusters: npt.ArrayLike | None = None) -> float:
    """The cluster-robust variance of the mean of `values`: C/(C − 1) · Σ_c (S_c − m_c·mean)² / N²
    over clusters c of m_c records summing to S_c. One record per cluster: var(ddof=1)/N. NaN with
    fewer than two clusters."""
    x = _floats(values).reshape(-1)
    codes = cluster_codes(clusters, x.size)
    count = int(codes.max()) + 1 if x.size else 0
    if count < 2:
        return math.nan
    sums = np.bincount(codes, weights=x, minlength=count)
    sizes = np.bincount(codes, minlength=count).astype(np.float64)
    residual = sums - sizes * x.mean()
    return float(count / (count - 1) * np.sum(residual ** 2) / x.size ** 2)


def cluster_count(clusters: npt.ArrayLike | None, size: int) -> int:
    return int(np.unique(cluster_codes(clusters, size)).size)


def design_effect(values: npt.ArrayLike, clusters: npt.ArrayLike | None) -> float:
    """How many times the clustered variance of the mean exceeds the one that counts records as
    independent (at least 1: clustering is never taken as evidence of more precision)."""
    x = _floats(values).reshape(-1)
    if clusters is None or x.size < 2:
        return 1.0
    naive = float(x.var(ddof=1)) / x.size
    clustered = mean_variance(x, clusters)
    if not naive > 0 or math.isnan(clustered):
        # Every record alike (no spread to cluster), or a single cluster: all records one unit.
        return 1.0 if not naive > 0 else float(x.size)
    return max(1.0, clustered / naive)


def proportion_difference(a: npt.ArrayLike, b: npt.ArrayLike, alpha: float, *,
                          a_clusters: npt.ArrayLike | None = None,
                          b_clusters: npt.ArrayLike | None = None) -> tuple[float, Interval] | None:
    """mean(a) − mean(b) of two independent 0/1 samples with Newcombe's hybrid score interval;
    None when either sample is empty. With clusters each side's counts are divided by its design
    effect (Rao-Scott), so correlated records weigh as the independent ones they are worth."""
    a, b = _floats(a), _floats(b)
    if a.size == 0 or b.size == 0:
        return None
    ka, kb = int(np.rint(a.sum())), int(np.rint(b.sum()))
    pa, pb = ka / a.size, kb / b.size
    da, db = design_effect(a, a_clusters), design_effect(b, b_clusters)
    return square_and_add(pa, wilson(ka / da, a.size / da, alpha), pb, wilson(kb / db, b.size / db, alpha))


def paired_difference(a: npt.ArrayLike, b: npt.ArrayLike, alpha: float, *, seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES,
                      clusters: npt.ArrayLike | None = None) -> tuple[float, Interval] | None:
    """mean(a − b) over the same records, with a percentile bootstrap over records (over clusters
    where given: whole subjects are drawn); None when empty. With one record (one cluster) the
    interval is the whole range: nothing is learnt from one pair."""
    a, b = _floats(a), _floats(b)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    if a.size == 0:
        return None
    differences = a - b
    estimate = float(differences.mean())
    if a.size < 2:
        return estimate, (-1.0, 1.0)
    rng = np.random.default_rng(seed)
    if clusters is not None:
        codes = cluster_codes(clusters, a.size)
        count = int(codes.max()) + 1
        if count < 2:
            return estimate, (-1.0, 1.0)
        if not differences.any():
            # Every pair equal (the original judged against itself): each resample's mean is
            # exactly 0, so the percentile interval is (0, 0) without drawing them.
            return estimate, (0.0, 0.0)
        sums = np.bincount(codes, weights=differences, minlength=count)
        sizes = np.bincount(codes, minlength=count).astype(np.float64)
        drawn = rng.integers(0, count, size=(resamples, count))
        means = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
        return estimate, (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))
    if not differences.any():
        return estimate, (0.0, 0.0)
    values, counts = np.unique(differences, return_counts=True)
    if values.size <= 16:
        # Resampling records with replacement draws multinomial counts of the distinct values:
        # the same bootstrap distribution, in O(resamples) instead of O(resamples × records).
        drawn = rng.multinomial(a.size, counts / a.size, size=resamples)
        means = drawn @ values / a.size
    else:
        means = differences[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    return estimate, (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def _floats(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _midranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(stats.rankdata(values, method="average"), dtype=np.float64)


def delong_auc(member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike, alpha: float, *,
               member_clusters: npt.ArrayLike | None = None,
               nonmember_clusters: npt.ArrayLike | None = None) -> tuple[float, Interval] | None:
    """AUC = P(member score > non-member score), ties half, with DeLong's interval (clipped to
    [0, 1]), clustered after Obuchowski where clusters are given: each side's structural
    components enter by cluster. None when a side is empty; with one record (one cluster) on a
    side the variance is unknown and the interval is [0, 1]."""
    x = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    y = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    m, n = x.size, y.size
    if m == 0 or n == 0:
        return None
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("membership scores contain NaN")
    combined = _midranks(np.concatenate([x, y]))
    rank_x, rank_y = _midranks(x), _midranks(y)
    auc = float((combined[:m].sum() - m * (m + 1) / 2) / (m * n))
    member_units, nonmember_units = cluster_count(member_clusters, m), cluster_count(nonmember_clusters, n)
    if member_units < 2 or nonmember_units < 2:
        return auc, (0.0, 1.0)
    v10 = (combined[:m] - rank_x) / n          # per member: share of non-members below it
    v01 = 1.0 - (combined[m:] - rank_y) / m    # per non-member: share of members above it
    # DeLong's variance from a handful of members is itself a guess. Two corrections keep small
    # forget sets honest: the members' component is at least what it is when they look exactly
    # unseen (each member's share of non-members below it is then uniform, variance 1/12), and
    # the quantile is Student's with the members' (clusters') degrees of freedom.
    variance = (max(mean_variance(v10, member_clusters), 1.0 / (12 * m))
                + mean_variance(v01, nonmember_clusters))
    se = math.sqrt(variance)
    quantile = float(stats.t.ppf(1 - alpha / 2, df=member_units - 1))
    return auc, (max(0.0, auc - quantile * se), min(1.0, auc + quantile * se))


def calibrated_difference(forget: npt.ArrayLike, null: npt.ArrayLike, alpha: float, *,
                          forget_clusters: npt.ArrayLike | None = None,
                          null_clusters: npt.ArrayLike | None = None) -> tuple[float, Interval] | None:
    """mean(forget) − mean(null) of two independent samples of per-record differences (a target's
    correctness less its references', say), with a Welch interval at level 1 − alpha. As in
    `delong_auc`, the forget side's variance is at least the null side's (what it is when the
    forget records look exactly unseen) and the quantile is Student's with the forget side's
    degrees of freedom, so a handful of records that happen to agree cannot make the interval
    narrow. With clusters both means take their cluster-robust variance and the quantile the
    forget clusters' degrees of freedom. None when a side is empty; one forget record (cluster)
    or one null record (cluster) gives [−1, 1]."""
    a, b = np.asarray(forget, dtype=np.float64), np.asarray(null, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return None
    estimate = float(a.mean() - b.mean())
    forget_units = cluster_count(forget_clusters, a.size)
    if forget_units < 2 or cluster_count(null_clusters, b.size) < 2:
        return estimate, (-1.0, 1.0)
    null_variance = float(b.var(ddof=1))
    se = math.sqrt(max(mean_variance(a, forget_clusters), null_variance / a.size) + mean_variance(b, null_clusters))
    quantile = float(stats.t.ppf(1 - alpha / 2, df=forget_units - 1))
    return estimate, (max(-2.0, estimate - quantile * se), min(2.0, estimate + quantile * se))
