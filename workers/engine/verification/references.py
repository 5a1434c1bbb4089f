"""Reference models for the per-record LiRA test (lira.py): K networks on random subject-disjoint halves of a
model's training data.

References come in complementary pairs (app/lineage/reference_halves.py): a subject is in
exactly one of references 2j and 2j+1. So every record has exactly K/2 references that never saw
it, membership needs no storage (it is recomputed from the subject keys), and erasing a subject
tells at once which references held it: one of each pair.

Tuning and confirmation use different instruments (`split`): the first half of the pairs (and half
of the holdout subjects, `holdout_confirms`) set the stopping rules, the loss targets and the
repair; the second half gives the verdict, so a result is never judged by the references it was
aimed at. Pairs stay together, so each half still gives every record one OUT reference per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from app.artifacts.store import get_store
from app.lineage.reference_halves import membership
from app.unlearning.types import ReferenceModel
from workers.engine.verification.lira import MIN_OUT_REFERENCES, logit_confidence
from workers.engine.serialization import load_network
from workers.engine.training import derive_seed, ensemble_proba, network_probas, train_single


@dataclass(frozen=True)
class Halves:
    """A model's reference pool split by complementary pair into the instruments that tune an
    unlearning (stopping rules, loss targets, repair) and those that confirm it (the verdict)."""

    tuning: tuple[ReferenceModel, ...]
    confirmation: tuple[ReferenceModel, ...]
    # Whether the halves are disjoint: a pool too small to split serves both roles whole.
    independent: bool
    # The references the confirmation half has when the pool is full.
    confirmation_expected: int


def split(pool: Sequence[ReferenceModel], pool_size: int) -> Halves:
    """Pairs 2j and 2j+1 stay together: the first half of the pairs tunes, the second confirms.
    Each half must leave every record `MIN_OUT_REFERENCES` references that never saw it (one per
    pair), so a pool of fewer than 4 × that (K = 8 for 2) is not split: both roles use all of it."""
    pool = tuple(pool)
    if pool_size < 4 * MIN_OUT_REFERENCES:
        return Halves(pool, pool, False, pool_size)
    first = (pool_size // 2) // 2
    return Halves(tuple(r for r in pool if r.position // 2 < first), tuple(r for r in pool if r.position // 2 >= first),
                  True, pool_size - 2 * first)


def holdout_confirms(subject_keys: Sequence[str], seed: int) -> np.ndarray:
    """True for the holdout records whose subject is in the confirmation half (about half of the
    subjects, fixed by `seed`); the others tune. A subject's records stay on one side."""
    keys = list(subject_keys)
    if not keys:
        return np.zeros(0, dtype=bool)
    return np.asarray(membership(keys, 2, derive_seed(seed, "holdout_halves"))[:, 1], dtype=bool)


def holding(subject_keys: Sequence[str], count: int, seed: int) -> list[int]:
    """The references whose training data held any of these subjects."""
    if not subject_keys:
        return []
    return sorted(set(np.flatnonzero(membership(subject_keys, count, seed).any(axis=0)).tolist()))


def reference_seed(seed: int, index: int) -> int:
    return derive_seed(seed, "reference", index)


def train_reference(family: Any, config: Any, shape: Any, features: torch.Tensor, labels: torch.Tensor,
                    member: np.ndarray, *, seed: int, index: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Weights of reference `index`, trained on the records where `member` is true."""
    chosen = torch.from_numpy(np.flatnonzero(member))
    return train_single(family, config, shape, features[chosen], labels[chosen],
                        seed=reference_seed(seed, index), device=device)


def scores(family: Any, networks: nn.Module | Sequence[nn.Module], features: torch.Tensor,
           labels: torch.Tensor) -> np.ndarray:
    """Logit-scaled confidence of the (ensemble) network in each record's label."""
    networks = [networks] if isinstance(networks, nn.Module) else list(networks)
    if labels.shape[0] == 0:
        return np.zeros(0)
    proba = ensemble_proba(family, networks, features).double().cpu().numpy()
    return logit_confidence(proba, labels.cpu().numpy())


def score_matrix(family: Any, references: Sequence[nn.Module], features: torch.Tensor,
                 labels: torch.Tensor) -> np.ndarray:
    """[n, K] scores of each record under each reference."""
    return _scores_and_correct(family, references, features, labels, correct=False)[0]


def predictions(family: Any, references: Sequence[nn.Module], features: torch.Tensor,
                labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """[n, K] scores and [n, K] 0/1 correctness of each record under each reference."""
    found_scores, found_correct = _scores_and_correct(family, references, features, labels, correct=True)
    assert found_correct is not None
    return found_scores, found_correct


# Bytes of float64 probabilities scored at once (a group of networks' [n, C] each).
SCORING_BYTES = 64 * 2**20


def _scores_and_correct(family: Any, references: Sequence[nn.Module], features: torch.Tensor, labels: torch.Tensor,
                        *, correct: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Each network's own probabilities (an ensemble of one divides by 1, which changes no bit),
    scored a group of networks at a time ([k, n, C] gives each network's row exactly as [n, C]
    alone would), the features hashed once for all of them within a `frozen_predictions` scope."""
    n = int(labels.shape[0])
    if not references or n == 0:
        return np.zeros((n, len(references))), np.zeros((n, len(references))) if correct else None
    truth = labels.cpu().numpy()
    found_scores, found_correct = [], []
    start, group = 0, 1
    while start < len(references):
        stacked = torch.stack(network_probas(family, references[start:start + group], features)).double().cpu().numpy()
        found_scores.append(logit_confidence(stacked, truth))
        if correct:
            found_correct.append((stacked.argmax(axis=2) == truth).astype(np.float64))
        start += stacked.shape[0]
        # The first network's probabilities tell how many fit in SCORING_BYTES.
        group = max(1, SCORING_BYTES // max(1, stacked[0].nbytes))
    # [n, K], laid out as the column stack of each network's scores was.
    scores = np.ascontiguousarray(np.concatenate(found_scores).T)
    return scores, np.ascontiguousarray(np.concatenate(found_correct).T) if correct else None


# A model's stored pool.


def networks(pool: Sequence[ReferenceModel], family: Any, config: Any, shape: Any) -> list[nn.Module]:
    store = get_store()
    return [load_network(family, config, shape, store.get_bytes(r.weights)) for r in pool]


def out_mask(pool: Sequence[ReferenceModel], subject_keys: list[str]) -> np.ndarray:
    """[n, len(pool)] true where a reference never saw the record's subject."""
    if not pool:
        return np.zeros((len(subject_keys), 0), dtype=bool)
    return np.column_stack([~membership(subject_keys, r.pool_size, r.membership_seed)[:, r.position]
                            for r in pool])


def forget_loss_targets(family: Any, target: nn.Module | Sequence[nn.Module], refs: Sequence[nn.Module],
                        forget: tuple[torch.Tensor, torch.Tensor], forget_out: np.ndarray,
                        unseen: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray | None:
    """The loss each forget record would have under a model that never saw it: the mean
    cross-entropy over its OUT references, shifted by how much lower the target's loss on unseen
    records is than the references' (they trained on half the data). For the stopping rule of
    neggrad_plus (workers/engine/unlearning/neggrad_plus.py). None when a forget record has no OUT
    reference or there are no unseen records."""
    out = np.asarray(forget_out, dtype=bool)
    if not refs or int(unseen[1].shape[0]) == 0 or (out.sum(axis=1) == 0).any():
        return None

    def losses(networks: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        proba = ensemble_proba(family, list(networks), x).double()
        picked = proba.gather(1, y.to(proba.device).view(-1, 1)).squeeze(1)
        return (-torch.log(picked.clamp_min(1e-12))).cpu().numpy()

    per_reference = np.column_stack([losses([r], *forget) for r in refs])
    out_mean = np.where(out, per_reference, 0.0).sum(axis=1) / out.sum(axis=1)
    targets = [target] if isinstance(target, nn.Module) else list(target)
    shift = float(losses(targets, *unseen).mean()) - float(np.mean([losses([r], *unseen).mean() for r in refs]))
    return np.asarray(np.maximum(out_mean + shift, 0.0), dtype=np.float64)


def reference_correctness(family: Any, refs: Sequence[nn.Module], forget: tuple[torch.Tensor, torch.Tensor],
                          forget_out: np.ndarray, unseen: tuple[torch.Tensor, torch.Tensor]
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """What the calibrated accuracy gap (checks.py `reference_gap_check`) compares with, from
    these references: each forget record's mean correctness under those of them that never saw
    it, and each unseen record's mean correctness under all of them. For the stopping rule that
    aims at that gap (workers/engine/unlearning/stopping.CalibratedGap). None when a forget record
    has no OUT reference or there are no unseen records."""
    out = np.asarray(forget_out, dtype=bool)
    if not refs or int(unseen[1].shape[0]) == 0 or (out.sum(axis=1) == 0).any():
        return None
    forget_correct = predictions(family, refs, *forget)[1]
    unseen_correct = predictions(family, refs, *unseen)[1]
    return (np.where(out, forget_correct, 0.0).sum(axis=1) / out.sum(axis=1), unseen_correct.mean(axis=1))
