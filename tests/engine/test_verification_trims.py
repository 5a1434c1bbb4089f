"""Work the verification no longer does twice (docs/benchmarks.md, the SISA erasure's cost): each
shortcut must give exactly, bit for bit, what the work it replaces gives."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from app.lineage.reference_halves import holds, membership
from tests.factories import family_and_config
from workers.engine import training
from workers.engine.families.base import Shape
from workers.engine.verification import references
from workers.engine.verification.intervals import paired_difference
from workers.engine.verification.lira import logit_confidence

SHAPE = Shape(n_features=12, n_classes=5)


def networks(count: int, dropout: float = 0.0):
    family, config = family_and_config("mlp_classifier", hidden=[16], dropout=dropout)
    return family, [training.new_network(family, config, SHAPE, seed=s) for s in range(count)]


def rows(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, SHAPE.n_features, generator=generator), torch.randint(0, SHAPE.n_classes, (n,),
                                                                                generator=generator)


def test_the_networks_scores_are_each_networks_own_whatever_the_grouping(monkeypatch):
    family, nets = networks(7)
    x, y = rows(300)
    truth = y.numpy()
    expected = [training.ensemble_proba(family, [n], x).double().numpy() for n in nets]
    scores = np.column_stack([logit_confidence(p, truth) for p in expected])
    correct = np.column_stack([(p.argmax(axis=1) == truth).astype(np.float64) for p in expected])
    # One network a group, three, all of them at once.
    for budget in (1, 3 * 300 * SHAPE.n_classes * 8, references.SCORING_BYTES):
        monkeypatch.setattr(references, "SCORING_BYTES", budget)
        for scope in (False, True):
            with training.frozen_predictions() if scope else _nothing():
                found_scores, found_correct = references.predictions(family, nets, x, y)
                matrix = references.score_matrix(family, nets, x, y)
            assert found_scores.tobytes() == scores.tobytes() and found_scores.flags.c_contiguous
            assert found_correct.tobytes() == correct.tobytes()
            assert matrix.tobytes() == scores.tobytes()
    # A stack of networks' probabilities is scored row by row as each alone.
    stacked = np.stack(expected)
    assert logit_confidence(stacked, truth).tobytes() == np.stack([logit_confidence(p, truth) for p in expected]).tobytes()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_reference_membership_is_the_per_record_rule():
    keys = [hashlib.sha256(f"s{i % 37}".encode()).hexdigest() for i in range(150)]
    for count in (2, 8):
        found = membership(keys, count, seed=11)
        assert found.shape == (150, count)
        for i, key in enumerate(keys):
            assert [bool(v) for v in found[i]] == [holds(k, 11, key) for k in range(count)]
    assert membership([], 4, 0).shape == (0, 4)


@pytest.mark.parametrize("clustered", [False, True])
def test_equal_pairs_give_the_interval_the_bootstrap_gives(clustered):
    rng = np.random.default_rng(2)
    a = (rng.random(80) < 0.7).astype(np.float64)
    clusters = rng.integers(0, 20, 80) if clustered else None
    assert paired_difference(a, a.copy(), 0.05, clusters=clusters) == (0.0, (0.0, 0.0))
    # One pair apart: the bootstrap still runs and sees it.
    b = a.copy()
    b[int(np.flatnonzero(a)[0])] = 0.0
    estimate, (low, high) = paired_difference(a, b, 0.05, clusters=clusters)
    assert estimate == pytest.approx(1 / 80) and low == 0.0 and high > 0.0
    # Too little to learn from still answers the whole range.
    assert paired_difference(a[:1], a[:1], 0.05) == (0.0, (-1.0, 1.0))


def test_predicting_leaves_a_network_in_the_mode_it_was_in():
    family, (network,) = networks(1, dropout=0.5)
    x, _ = rows(40)
    network.eval()
    reference = family.predict_proba(network, x)
    network.train()
    # In training mode, predictions are still made without dropout, and the mode comes back.
    assert torch.equal(family.predict_proba(network, x), reference)
    assert network.training and all(m.training for m in network.modules())
    network.eval()
    assert torch.equal(family.predict_proba(network, x), reference)
    assert not any(m.training for m in network.modules())


def test_a_features_tensor_changed_in_place_is_hashed_again():
    family, nets = networks(2)
    x, _ = rows(30)
    with training.frozen_predictions():
        frozen = [training.frozen_network(f"w{i}", lambda n=n: n) for i, n in enumerate(nets)]
        before = training.ensemble_proba(family, frozen, x)
        assert torch.equal(training.ensemble_proba(family, frozen, x), before)
        x.add_(1.0)
        after = training.ensemble_proba(family, frozen, x)
    assert not torch.equal(before, after)
    assert torch.equal(after, training.ensemble_proba(family, nets, x))
