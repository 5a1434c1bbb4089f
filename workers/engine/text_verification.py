"""Does a language model still remember the forget records? Figures for text.

Three attacks, each comparing the forget records with held-out records the model never saw:
- loss: the mean token NLL of a record; trained text tends to have a lower loss (Yeom et al.);
- Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data"):
  each token's log-probability standardised by the mean and spread of the log-probabilities
  of the whole next-token distribution, averaged over the record's lowest k% tokens. A trained
  text sits at a local maximum of the likelihood, so its tokens score high against the
  alternatives the model saw in the same place;
- verbatim extraction: prompted with the first half of a record, does greedy decoding give
  back the next 20 bytes exactly?
These are the measurements, per record; the AUCs are in workers/engine/unlearning/verification.py
and the verdicts on them in workers/engine/text_forgetting.py. Both AUCs are 0.5 for a model
that never saw the forget records. Every figure is a plain function of the networks and records,
so a statistical verdict can wrap it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from workers.engine.families.causal_lm import ensemble_log_softmax, inputs_and_targets
from workers.engine.families.lm_scoring import generate_batch

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
        expected.append(list(data[half:half + length]))
    found: list[float] = []
    for start in range(0, len(prompts), BATCH):
        outputs = generate_batch(networks, prompts[start:start + BATCH], length, block_size)
        found += [float(out[:len(want)] == want) for out, want in zip(outputs, expected[start:start + BATCH], strict=True)]
    return np.asarray(found, dtype=np.float64)


def extraction_counts(outcomes: npt.NDArray[np.float64]) -> dict[str, Any]:
    """The stored figure of `extraction_outcomes`: records tried, extracted, and the fraction."""
    if not len(outcomes):
        return {"records": 0, "extracted": 0, "fraction": None}
    extracted = int(outcomes.sum())
    return {"records": len(outcomes), "extracted": extracted, "fraction": extracted / len(outcomes)}


def verbatim_extraction(networks: Sequence[nn.Module], texts: Sequence[str], block_size: int,
                        length: int = EXTRACTION_BYTES) -> dict[str, Any]:
    """How many records come back verbatim (`extraction_outcomes`, counted)."""
    return extraction_counts(extraction_outcomes(networks, texts, block_size, length))
