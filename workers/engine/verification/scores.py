"""What the checks are computed from, on the torch side: each record's correctness and loss under
a network or a SISA ensemble, and the scores of the per-record LiRA test (lira.py) under the
target and its references or a SISA model's shards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from workers.engine.training import ensemble_proba
from workers.engine.verification import references as reference_models

LabelledSet = tuple[torch.Tensor, torch.Tensor]
Networks = nn.Module | Sequence[nn.Module]


@dataclass(frozen=True)
class MembershipInputs:
    """Scores for the per-record LiRA test: the target's and the references' on the forget and the
    null (holdout) records, with which references never saw which record."""

    forget_target: np.ndarray
    forget_references: np.ndarray
    forget_out: np.ndarray
    null_target: np.ndarray
    null_references: np.ndarray
    null_out: np.ndarray
    reference: str = "references"
    # 0/1 correctness of each reference on each record ([n, K]), for the calibrated accuracy gap.
    forget_references_correct: np.ndarray | None = None
    null_references_correct: np.ndarray | None = None
    # Each record's subject (any label that tells subjects apart), so the test is judged per subject.
    forget_subjects: np.ndarray | None = None
    null_subjects: np.ndarray | None = None

    def forget_part(self, mask: np.ndarray) -> MembershipInputs:
        """The same inputs on the forget records where `mask` is true (one request's), against
        the same null records."""
        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else np.asarray(values)[mask]

        return replace(self, forget_target=np.asarray(self.forget_target)[mask],
                       forget_references=np.asarray(self.forget_references)[mask],
                       forget_out=np.asarray(self.forget_out)[mask],
                       forget_references_correct=part(self.forget_references_correct),
                       forget_subjects=part(self.forget_subjects))


def as_list(networks: Networks) -> list[nn.Module]:
    """One network or a SISA ensemble, as a list."""
    return [networks] if isinstance(networks, nn.Module) else list(networks)


def correct_and_losses(family: Any, networks: Networks, x: torch.Tensor,
                       y: torch.Tensor) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if y.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    proba = ensemble_proba(family, as_list(networks), x).double()
    y = y.to(proba.device)
    correct = (proba.argmax(dim=1) == y).double().cpu().numpy()
    losses = (-torch.log(proba.gather(1, y.view(-1, 1)).squeeze(1).clamp_min(1e-12))).cpu().numpy()
    return correct, losses


def reference_membership_inputs(family: Any, target: Networks, refs: Sequence[nn.Module], forget: LabelledSet,
                                forget_out: np.ndarray, holdout: LabelledSet) -> MembershipInputs:
    """LiRA inputs of a model against its reference models (`forget_out`: [n_forget, K])."""
    forget_scores, forget_correct = reference_models.predictions(family, refs, *forget)
    null_scores, null_correct = reference_models.predictions(family, refs, *holdout)
    return reference_inputs(reference_models.scores(family, target, *forget), forget_scores, forget_out,
                            reference_models.scores(family, target, *holdout), null_scores,
                            forget_references_correct=forget_correct, null_references_correct=null_correct)


def reference_inputs(forget_target: np.ndarray, forget_references: np.ndarray, forget_out: np.ndarray,
                     null_target: np.ndarray, null_references: np.ndarray, **correct: np.ndarray) -> MembershipInputs:
    """LiRA inputs from scores under the target and each reference ([n, K]); no reference saw a
    null (holdout) record."""
    null_out = np.ones(np.shape(null_references), dtype=bool)
    return MembershipInputs(forget_target, forget_references, forget_out, null_target, null_references, null_out,
                            "references", **correct)


def shard_membership_inputs(family: Any, shards: Sequence[nn.Module], forget: LabelledSet, forget_shard: np.ndarray,
                            holdout: LabelledSet) -> MembershipInputs:
    """SISA: each forget record is scored under the shard that held it (retrained without it) and
    compared with the other shards, which never saw it. Null records get the same treatment with
    a shard drawn for each, so both sides measure one shard against the rest."""
    return shard_inputs(reference_models.score_matrix(family, shards, *forget),
                        reference_models.score_matrix(family, shards, *holdout), forget_shard)


def shard_inputs(matrix_forget: np.ndarray, matrix_null: np.ndarray, forget_shard: np.ndarray) -> MembershipInputs:
    """`shard_membership_inputs` from the [n, S] scores of each record under each shard."""
    rows_f = np.arange(len(forget_shard))
    null_shard = np.random.default_rng(0).integers(0, matrix_null.shape[1], size=matrix_null.shape[0])
    rows_n = np.arange(matrix_null.shape[0])
    out_f = np.ones_like(matrix_forget, dtype=bool)
    out_f[rows_f, forget_shard] = False
    out_n = np.ones_like(matrix_null, dtype=bool)
    out_n[rows_n, null_shard] = False
    return MembershipInputs(matrix_forget[rows_f, forget_shard], matrix_forget, out_f,
                            matrix_null[rows_n, null_shard], matrix_null, out_n, "shards")
