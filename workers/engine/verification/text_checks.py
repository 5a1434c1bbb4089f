"""A language model's forgetting checks: per-record figures of texts and the verdicts on them.

The figures, per record, each comparing the forget records with held-out records the model never
saw:
- loss: the mean token NLL of a record; trained text tends to have a lower loss (Yeom et al.);
- Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data"):
  each token's log-probability standardised by the mean and spread of the log-probabilities
  of the whole next-token distribution, averaged over the record's lowest k% tokens. A trained
  text sits at a local maximum of the likelihood, so its tokens score high against the
  alternatives the model saw in the same place;
- verbatim extraction: prompted with the first half of a record, does greedy decoding give
  back the next 20 bytes exactly?

The checks on them: the tabular block (checks.py) with checks on texts, each record one text:
- `mia_auc`: the loss attack, mean token loss per record, forget vs holdout (two-sided);
- `min_k_plus_plus_auc`: Min-K%++, higher score = member, forget vs holdout (two-sided, the same
  tolerance): far below 0.5 the forget records stand out as less familiar than unseen text,
  which gives them away too;
- `extraction`: the share of forget records greedy decoding gives back verbatim less the share of
  held-out records (Newcombe, one-sided: unseen text that the model completes by its template is
  no memorisation, only an excess over it is);
- `per_record_audit`: offline LiRA (lira.py) on the record's mean token log-likelihood against the
  reference models that never saw it, or a SISA model's other shards;
- `holdout_drop` (utility): held-out next-token accuracy before − after, paired per record (each
  record's share of tokens predicted), paired bootstrap.

Each check reuses the tabular one where there is one, so both families read alike. The AUCs as
plain figures (not verdicts) are in workers/engine/unlearning/verification.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.unlearning.types import JsonValue
from workers.engine.families.causal_lm import codec_of, ensemble_log_softmax, inputs_and_targets
from workers.engine.families.lm_scoring import generate_batch
from workers.engine.verification.checks import (
    Policy,
    auc_check,
    block,
    calibrated_auc_check,
    holdout_drop_check,
    membership_check,
    mia_auc_check,
    policy_from_settings,
)
from workers.engine.verification.intervals import proportion_difference
from workers.engine.verification.scores import MembershipInputs
from workers.engine.verification.verdicts import Check, check, interval_alpha

BATCH = 128
MIN_K_FRACTION = 0.2
EXTRACTION_BYTES = 20


class TokenStatistics(NamedTuple):
    """Per record (sorted ids): mean token NLL, Min-K%++ score (higher = member) and the share
    of its tokens the network predicts as its arg-max (next-token accuracy)."""

    records: npt.NDArray[np.int64]
    loss: npt.NDArray[np.float64]
    min_k: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]


def token_statistics(networks: Sequence[nn.Module], windows: torch.Tensor, owners: np.ndarray) -> TokenStatistics:
    """Per record: mean token NLL, the Min-K%++ score (k = 20%) and next-token accuracy."""
    nll_sum: dict[int, float] = {}
    hits: dict[int, int] = {}
    count: dict[int, int] = {}
    standardised: dict[int, list[np.ndarray]] = {}
    for start in range(0, windows.shape[0], BATCH):
        inputs, targets = inputs_and_targets(windows[start:start + BATCH])
        log_probs = ensemble_log_softmax(networks, inputs).double()
        mask = targets >= 0
        picked = log_probs.gather(2, targets.clamp_min(0).unsqueeze(2)).squeeze(2)
        correct = (log_probs.argmax(dim=2) == targets) & mask
        probs = log_probs.exp()
        mu = (probs * log_probs).sum(dim=2)
        sigma = ((probs * log_probs.square()).sum(dim=2) - mu.square()).clamp_min(1e-12).sqrt()
        scores = ((picked - mu) / sigma).numpy()
        for row, owner in enumerate(owners[start:start + BATCH].tolist()):
            keep = mask[row].numpy()
            nll_sum[owner] = nll_sum.get(owner, 0.0) - float(picked[row][mask[row]].sum())
            hits[owner] = hits.get(owner, 0) + int(correct[row].sum())
            count[owner] = count.get(owner, 0) + int(keep.sum())
            standardised.setdefault(owner, []).append(scores[row][keep])
    records = sorted(nll_sum)
    losses = np.array([nll_sum[r] / max(count[r], 1) for r in records], dtype=np.float64)
    accuracy = np.array([hits[r] / max(count[r], 1) for r in records], dtype=np.float64)
    min_k = []
    for r in records:
        values = np.sort(np.concatenate(standardised[r]))
        lowest = values[:max(1, int(round(MIN_K_FRACTION * len(values))))]
        min_k.append(float(lowest.mean()) if len(values) else 0.0)
    return TokenStatistics(np.asarray(records, dtype=np.int64), losses, np.asarray(min_k, dtype=np.float64), accuracy)


def extraction_outcomes(networks: Sequence[nn.Module], texts: Sequence[str], block_size: int,
                        length: int = EXTRACTION_BYTES) -> npt.NDArray[np.float64]:
    """1 per record that comes back verbatim, 0 per record that does not: prompted with the first
    half of a record's bytes, greedy decoding emits exactly its next `length` bytes (the rest,
    when shorter). Records of fewer than 2 bytes cannot be split and are left out."""
    prompts, expected = [], []
    for text in texts:
        data = text.encode("utf-8")
        if len(data) < 2:
            continue
        half = len(data) // 2
        prompts.append(data[:half])
        expected.append(data[half:half + length])
    codec = codec_of(networks)
    found: list[float] = []
    for start in range(0, len(prompts), BATCH):
        # `length` tokens hold at least `length` bytes under any codec of whole bytes or more.
        outputs = generate_batch(networks, prompts[start:start + BATCH], length, block_size)
        found += [float(codec.to_bytes(out)[:len(want)] == want)
                  for out, want in zip(outputs, expected[start:start + BATCH], strict=True)]
    return np.asarray(found, dtype=np.float64)


def extraction_counts(outcomes: npt.NDArray[np.float64]) -> dict[str, JsonValue]:
    """The stored figure of `extraction_outcomes`: records tried, extracted, and the fraction."""
    if not len(outcomes):
        return {"records": 0, "extracted": 0, "fraction": None}
    extracted = int(outcomes.sum())
    return {"records": len(outcomes), "extracted": extracted, "fraction": extracted / len(outcomes)}


def verbatim_extraction(networks: Sequence[nn.Module], texts: Sequence[str], block_size: int,
                        length: int = EXTRACTION_BYTES) -> dict[str, JsonValue]:
    """How many records come back verbatim (`extraction_outcomes`, counted)."""
    return extraction_counts(extraction_outcomes(networks, texts, block_size, length))


def score(statistics: TokenStatistics) -> np.ndarray:
    """A record's score under one network for the LiRA test: its mean token log-likelihood, higher
    for a record the network saw (close to Gaussian across networks, as LiRA wants)."""
    return -np.asarray(statistics.loss, dtype=np.float64)


def min_k_auc_check(forget_scores: np.ndarray, holdout_scores: np.ndarray, policy: Policy) -> Check:
    return auc_check("min_k_plus_plus_auc", "min_k_plus_plus", "Min-K%++ membership AUC − 0.5",
                     np.asarray(forget_scores, dtype=np.float64), np.asarray(holdout_scores, dtype=np.float64),
                     policy)


def extraction_check(forget_extracted: np.ndarray, holdout_extracted: np.ndarray, policy: Policy) -> Check:
    """Forget − holdout share of records extracted verbatim (0/1 per record), one-sided."""
    found = proportion_difference(forget_extracted, holdout_extracted, interval_alpha(policy.alpha))
    return check("extraction", label="forget − holdout share extracted verbatim", attack="verbatim_extraction",
                 test="newcombe_wilson", estimate=None if found is None else found[0],
                 interval=None if found is None else found[1], alpha=policy.alpha, tolerance=policy.extraction,
                 two_sided=False, n=len(forget_extracted), reference="holdout",
                 unavailable="needs forget and held-out records of at least 2 bytes",
                 forget_extracted=int(np.sum(forget_extracted)), holdout_extracted=int(np.sum(holdout_extracted)),
                 holdout_records=len(holdout_extracted))


def text_checks(forget: TokenStatistics, holdout: TokenStatistics, before_holdout: TokenStatistics | None,
                forget_extracted: np.ndarray, holdout_extracted: np.ndarray, policy: Policy,
                membership_inputs: MembershipInputs | None = None,
                min_k_inputs: MembershipInputs | None = None) -> list[Check]:
    """Every check of a language model's new version, from the new version's per-record figures
    on the forget and held-out records and the version before's on the same held-out records.

    Where there are references (`membership_inputs`: mean token log-likelihoods, `score`;
    `min_k_inputs`: Min-K%++ scores, under the target and each reference), the two AUCs judge each
    record against what its OUT references expect (`calibrated_auc_check`), not against 0.5 on
    the raw holdout: forget texts that carry secrets are unfamiliar to every model, so an exact
    retrain would fail the raw comparison and a half-unlearned model could pass it."""
    loss = (calibrated_auc_check("mia_auc", "loss_threshold", "membership-inference AUC − 0.5", membership_inputs,
                                 policy) if membership_inputs is not None
            else mia_auc_check(forget.loss, holdout.loss, policy))
    min_k = (calibrated_auc_check("min_k_plus_plus_auc", "min_k_plus_plus", "Min-K%++ membership AUC − 0.5",
                                  min_k_inputs, policy) if min_k_inputs is not None
             else min_k_auc_check(forget.min_k, holdout.min_k, policy))
    checks = [loss, min_k, extraction_check(forget_extracted, holdout_extracted, policy)]
    if membership_inputs is not None:
        checks.append(membership_check(membership_inputs, policy, forget.records))
    if before_holdout is not None:
        if not np.array_equal(before_holdout.records, holdout.records):
            raise ValueError("the holdout drop pairs the same records before and after")
        checks.append(holdout_drop_check(before_holdout.accuracy, holdout.accuracy, policy,
                                         label="held-out next-token accuracy drop"))
    return checks


def text_verification_block(*, forget: TokenStatistics, holdout: TokenStatistics,
                            before_holdout: TokenStatistics | None, forget_extracted: np.ndarray,
                            holdout_extracted: np.ndarray, method: str, exact: bool,
                            membership_inputs: MembershipInputs | None = None, live: int = 0, pool_expected: int = 0,
                            reference_ids: Sequence[str] = (), policy: Policy | None = None,
                            requests: Mapping[str, np.ndarray] | None = None,
                            min_k_inputs: MembershipInputs | None = None,
                            independent: bool = False) -> dict[str, JsonValue]:
    """The block of `checks.verification_block` for a language model. `membership_inputs` are the
    scores (`score`) of the forget and held-out records under the new version and its `live`
    references or shards; without them a model that should have `pool_expected` references says
    it has too few, and one that has none runs no LiRA test, as for the tabular families."""
    policy = policy or policy_from_settings()
    checks = text_checks(forget, holdout, before_holdout, forget_extracted, holdout_extracted, policy, membership_inputs,
                         min_k_inputs)
    per_request = None
    if requests and len(requests) > 1:
        per_request = {}
        for request_id, mask in requests.items():
            mask = np.asarray(mask, dtype=bool)
            per_request[request_id] = text_checks(
                TokenStatistics(*(np.asarray(values)[mask] for values in forget)), holdout, before_holdout,
                np.asarray(forget_extracted)[mask], holdout_extracted, policy,
                None if membership_inputs is None else membership_inputs.forget_part(mask),
                None if min_k_inputs is None else min_k_inputs.forget_part(mask))
    return block(checks, policy, method=method, exact=exact, records=len(forget.records),
                 reference=membership_inputs.reference if membership_inputs is not None else "holdout",
                 tested=membership_inputs is not None, live=live, pool_expected=pool_expected, reference_ids=reference_ids,
                 requests=per_request, independent=independent,
                 tolerances={"mia_auc": policy.mia_auc, "extraction": policy.extraction, "audit": policy.membership,
                             "holdout_drop": policy.holdout_drop})
