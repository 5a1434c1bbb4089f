"""Generated LiRA scores of exact retrains (or of models that still remember some subjects) under
K = 8 references in complementary pairs, shared by the audit's tests."""

import numpy as np

from workers.engine.verification import references
from workers.engine.verification.scores import MembershipInputs

K = 8
RECORDS_PER_SUBJECT = 4


def _scores(rng, subjects: int, *, pair_spread: float, rho: float, shift: np.ndarray | None = None):
    """Scores of `subjects` × 4 records under the target and K references. References 2j and 2j+1
    trained on complementary halves: they disagree about a record by ±u (what one half held
    that the other did not), so averaging both members of a pair cancels u. A subject's records
    share a latent with correlation `rho` in the target's score."""
    n = subjects * RECORDS_PER_SUBJECT
    difficulty = rng.normal(0, 3, n)
    u = rng.normal(0, pair_spread, (n, K // 2))
    halves = np.repeat(u, 2, axis=1) * np.tile([1.0, -1.0], K // 2)
    refs = difficulty[:, None] + halves + rng.normal(0, 0.5, (n, K))
    shared = np.repeat(rng.normal(0, 1, subjects), RECORDS_PER_SUBJECT)
    own = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(0, 1, n)
    target = difficulty + 0.3 + 0.8 * own + (0.0 if shift is None else shift)
    owners = np.repeat(np.arange(subjects), RECORDS_PER_SUBJECT)
    return target, refs, owners


def _inputs(seed: int, subjects: int = 100, *, pair_spread: float = 1.0, rho: float = 0.0,
            shift: np.ndarray | None = None, labelled: bool = True) -> MembershipInputs:
    """An exact retrain (no forget record seen) unless `shift` raises some forget records."""
    rng = np.random.default_rng(seed)
    forget_target, forget_refs, forget_owners = _scores(rng, subjects, pair_spread=pair_spread, rho=rho, shift=shift)
    null_target, null_refs, null_owners = _scores(rng, subjects, pair_spread=pair_spread, rho=rho)
    forget_out = ~references.membership([f"s{seed}-{o}" for o in forget_owners], K, seed)
    return MembershipInputs(forget_target, forget_refs, forget_out, null_target, null_refs,
                            np.ones_like(null_refs, dtype=bool),
                            forget_subjects=forget_owners if labelled else None,
                            null_subjects=null_owners + subjects if labelled else None)
