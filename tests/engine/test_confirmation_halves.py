"""Tuning and confirmation use different instruments (workers/engine/verification/references.py
`split`, `holdout_confirms`): references split by complementary pair, the holdout by subject."""

import uuid

import numpy as np

from app.unlearning.types import ReferenceModel
from workers.engine.verification import references
from workers.engine.verification.lira import MIN_OUT_REFERENCES


def pool(size: int, live=None):
    return tuple(ReferenceModel(uuid.uuid4(), k, size, 7, f"w{k}") for k in (range(size) if live is None else live))


def test_references_split_by_complementary_pair_and_each_half_leaves_two_out_references():
    halves = references.split(pool(8), 8)
    assert halves.independent and halves.confirmation_expected == 4
    assert [r.position for r in halves.tuning] == [0, 1, 2, 3]
    assert [r.position for r in halves.confirmation] == [4, 5, 6, 7]
    keys = [f"subject-{i}" for i in range(300)]
    for half in (halves.tuning, halves.confirmation):
        out = references.out_mask(half, keys)
        # One reference of each pair never saw the subject: exactly MIN_OUT_REFERENCES per record.
        assert (out.sum(axis=1) == MIN_OUT_REFERENCES).all()
    # A partial pool splits by position all the same: the missing references stay missing.
    partial = references.split(pool(8, live=[0, 1, 3, 4, 6, 7]), 8)
    assert [r.position for r in partial.tuning] == [0, 1, 3] and [r.position for r in partial.confirmation] == [4, 6, 7]


def test_a_pool_too_small_to_split_serves_both_roles_whole():
    halves = references.split(pool(4), 4)
    assert not halves.independent and halves.tuning == halves.confirmation and len(halves.confirmation) == 4


def test_the_holdout_splits_by_subject_into_about_halves():
    keys = [f"subject-{i // 3}" for i in range(3000)]
    confirms = references.holdout_confirms(keys, seed=5)
    assert 0.4 < confirms.mean() < 0.6
    # Each subject's records are all on one side.
    by_subject = {}
    for key, side in zip(keys, confirms.tolist()):
        by_subject.setdefault(key, set()).add(side)
    assert all(len(sides) == 1 for sides in by_subject.values())
    assert (references.holdout_confirms(keys, seed=5) == confirms).all()
    assert references.holdout_confirms([], seed=5).shape == (0,)
