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

The checks on them: the tabular block (checks.py) with checks on texts, each record one text.
A certificate speaks of subjects, and one subject's texts are often near-duplicates, so where the
texts' subjects are known (`TextSubjects`: pseudonymous subject keys, never an identifier) every
check treats the subject as its unit, as the tabular checks do:
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

By subject: the AUCs take DeLong's interval clustered after Obuchowski, the extraction check
divides its counts by their design effect (Rao-Scott) and reports how many subjects had a text
given back, the audit joins a subject's texts by Stouffer's z and runs Holm over subjects with
Clopper-Pearson limits on subject counts (lira.py), and the holdout drop resamples whole subjects
(intervals.py). A subject whose every text is a little too familiar is flagged even where no one
text would be.

Each check reuses the tabular one where there is one, so both families read alike. The AUCs as
plain figures (not verdicts) are in workers/engine/unlearning/verification.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.unlearning.types import JsonValue
from workers.engine.families.causal_lm import codec_of, ensemble_log_softmax, inputs_and_targets
from workers.engine.families.lm_scoring import generate_batch
from workers.engine.verification.checks import (
    NO_SUBJECTS,
    Policy,
    Subjects,
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


@dataclass(frozen=True)
class TextSubjects:
    """Each text's subject (any labels that tell subjects apart; the job passes pseudonymous
    subject keys): per forget and held-out record, in the order of their `TokenStatistics`, and
    per extraction outcome (`extraction_outcomes`, which leaves out texts too short to split)."""

    forget: np.ndarray
    holdout: np.ndarray
    forget_extracted: np.ndarray
    holdout_extracted: np.ndarray

    def records(self) -> Subjects:
        """The forget and held-out records' subjects, as the tabular checks take them."""
        return Subjects(np.asarray(self.forget, dtype=object), np.asarray(self.holdout, dtype=object))

    def forget_part(self, mask: np.ndarray) -> tuple[TextSubjects, npt.NDArray[np.bool_]]:
        """The labels of the forget records where `mask` is true (one request's), and which
        extraction outcomes are those records' subjects'."""
        forget = np.asarray(self.forget, dtype=object)[np.asarray(mask, dtype=bool)]
        extracted = np.isin(np.asarray(self.forget_extracted, dtype=object), forget)
        return (replace(self, forget=forget, forget_extracted=np.asarray(self.forget_extracted, dtype=object)[extracted]),
                np.asarray(extracted, dtype=np.bool_))


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


def extractable(texts: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Which texts `extraction_outcomes` tries: those of at least 2 bytes, which can be split."""
    return np.asarray([len(text.encode("utf-8")) >= 2 for text in texts], dtype=np.bool_)


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


def min_k_auc_check(forget_scores: np.ndarray, holdout_scores: np.ndarray, policy: Policy,
                    subjects: Subjects = NO_SUBJECTS) -> Check:
    return auc_check("min_k_plus_plus_auc", "min_k_plus_plus", "Min-K%++ membership AUC − 0.5",
                     np.asarray(forget_scores, dtype=np.float64), np.asarray(holdout_scores, dtype=np.float64),
                     policy, subjects)


def _subjects_extracted(outcomes: np.ndarray, subjects: np.ndarray | None) -> tuple[int, int] | None:
    """(subjects with at least one text given back, subjects tried); None without labels."""
    if subjects is None:
        return None
    labels = np.asarray(subjects, dtype=object)
    if labels.shape[0] != np.asarray(outcomes).shape[0]:
        raise ValueError("every extraction outcome needs its subject")
    if not labels.size:
        return 0, 0
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    hits = np.bincount(np.asarray(codes).reshape(-1), weights=np.asarray(outcomes, dtype=np.float64))
    return int((hits > 0).sum()), int(hits.size)


def extraction_check(forget_extracted: np.ndarray, holdout_extracted: np.ndarray, policy: Policy,
                     forget_subjects: np.ndarray | None = None, holdout_subjects: np.ndarray | None = None) -> Check:
    """Forget − holdout share of records extracted verbatim (0/1 per record), one-sided. With the
    outcomes' subjects each side's counts are divided by its design effect (a subject whose
    texts come back together is one unit of evidence, not several) and the figures count the
    subjects with a text given back."""
    found = proportion_difference(forget_extracted, holdout_extracted, interval_alpha(policy.alpha),
                                  a_clusters=None if forget_subjects is None else np.asarray(forget_subjects).astype(str),
                                  b_clusters=None if holdout_subjects is None else np.asarray(holdout_subjects).astype(str))
    forget_count = _subjects_extracted(forget_extracted, forget_subjects)
    holdout_count = _subjects_extracted(holdout_extracted, holdout_subjects)
    by_subject: dict[str, JsonValue] = {"clustered_by_subject": forget_subjects is not None}
    if forget_count is not None:
        by_subject |= {"forget_subjects_extracted": forget_count[0], "forget_subjects": forget_count[1]}
    if holdout_count is not None:
        by_subject |= {"holdout_subjects_extracted": holdout_count[0], "holdout_subjects": holdout_count[1]}
    return check("extraction", label="forget − holdout share extracted verbatim", attack="verbatim_extraction",
                 test="newcombe_wilson", estimate=None if found is None else found[0],
                 interval=None if found is None else found[1], alpha=policy.alpha, tolerance=policy.extraction,
                 two_sided=False, n=len(forget_extracted), reference="holdout",
                 unavailable="needs forget and held-out records of at least 2 bytes",
                 forget_extracted=int(np.sum(forget_extracted)), holdout_extracted=int(np.sum(holdout_extracted)),
                 holdout_records=len(holdout_extracted), figures=by_subject)


def _labelled(inputs: MembershipInputs | None, labels: Subjects) -> MembershipInputs | None:
    """`inputs` with each forget and null record's subject, so the LiRA test judges subjects."""
    return None if inputs is None else replace(inputs, forget_subjects=labels.forget, null_subjects=labels.holdout)


def text_checks(forget: TokenStatistics, holdout: TokenStatistics, before_holdout: TokenStatistics | None,
                forget_extracted: np.ndarray, holdout_extracted: np.ndarray, policy: Policy,
                membership_inputs: MembershipInputs | None = None,
                min_k_inputs: MembershipInputs | None = None, subjects: TextSubjects | None = None) -> list[Check]:
    """Every check of a language model's new version, from the new version's per-record figures
    on the forget and held-out records and the version before's on the same held-out records.

    Where there are references (`membership_inputs`: mean token log-likelihoods, `score`;
    `min_k_inputs`: Min-K%++ scores, under the target and each reference), the two AUCs judge each
    record against what its OUT references expect (`calibrated_auc_check`), not against 0.5 on
    the raw holdout: forget texts that carry secrets are unfamiliar to every model, so an exact
    retrain would fail the raw comparison and a half-unlearned model could pass it.

    With the texts' `subjects` every check counts subjects, not texts (the module's docstring);
    without them each text is its own subject."""
    labels = NO_SUBJECTS
    if subjects is not None:
        if len(subjects.forget) != len(forget.records) or len(subjects.holdout) != len(holdout.records):
            raise ValueError("every forget and held-out text needs its subject")
        labels = subjects.records()
        membership_inputs = _labelled(membership_inputs, labels)
        min_k_inputs = _labelled(min_k_inputs, labels)
    loss = (calibrated_auc_check("mia_auc", "loss_threshold", "membership-inference AUC − 0.5", membership_inputs,
                                 policy, labels) if membership_inputs is not None
            else mia_auc_check(forget.loss, holdout.loss, policy, labels))
    min_k = (calibrated_auc_check("min_k_plus_plus_auc", "min_k_plus_plus", "Min-K%++ membership AUC − 0.5",
                                  min_k_inputs, policy, labels) if min_k_inputs is not None
             else min_k_auc_check(forget.min_k, holdout.min_k, policy, labels))
    checks = [loss, min_k, extraction_check(forget_extracted, holdout_extracted, policy,
                                            None if subjects is None else subjects.forget_extracted,
                                            None if subjects is None else subjects.holdout_extracted)]
    if membership_inputs is not None:
        checks.append(membership_check(membership_inputs, policy, forget.records))
    if before_holdout is not None:
        if not np.array_equal(before_holdout.records, holdout.records):
            raise ValueError("the holdout drop pairs the same records before and after")
        checks.append(holdout_drop_check(before_holdout.accuracy, holdout.accuracy, policy,
                                         label="held-out next-token accuracy drop", clusters=labels.holdout))
    return checks


def text_verification_block(*, forget: TokenStatistics, holdout: TokenStatistics,
                            before_holdout: TokenStatistics | None, forget_extracted: np.ndarray,
                            holdout_extracted: np.ndarray, method: str, exact: bool,
                            membership_inputs: MembershipInputs | None = None, live: int = 0, pool_expected: int = 0,
                            reference_ids: Sequence[str] = (), policy: Policy | None = None,
                            requests: Mapping[str, np.ndarray] | None = None,
                            min_k_inputs: MembershipInputs | None = None,
                            independent: bool = False, subjects: TextSubjects | None = None) -> dict[str, JsonValue]:
    """The block of `checks.verification_block` for a language model. `membership_inputs` are the
    scores (`score`) of the forget and held-out records under the new version and its `live`
    references or shards; without them a model that should have `pool_expected` references says
    it has too few, and one that has none runs no LiRA test, as for the tabular families.
    `subjects` labels every text with its subject, so each check judges subjects; `requests`
    maps each request of a batch to a mask over the forget records (its subjects'), and each
    request gets its own checks over its own subjects, as for the tabular families."""
    policy = policy or policy_from_settings()
    checks = text_checks(forget, holdout, before_holdout, forget_extracted, holdout_extracted, policy, membership_inputs,
                         min_k_inputs, subjects)
    per_request = None
    if requests and len(requests) > 1:
        per_request = {}
        for request_id, mask in requests.items():
            mask = np.asarray(mask, dtype=bool)
            if not mask.any():
                # None of this request's subjects has a text in this model: the batch's checks
                # say all there is.
                continue
            own, extracted = (None, mask) if subjects is None else subjects.forget_part(mask)
            per_request[request_id] = text_checks(
                TokenStatistics(*(np.asarray(values)[mask] for values in forget)), holdout, before_holdout,
                np.asarray(forget_extracted)[extracted], holdout_extracted, policy,
                None if membership_inputs is None else membership_inputs.forget_part(mask),
                None if min_k_inputs is None else min_k_inputs.forget_part(mask), own)
    return block(checks, policy, method=method, exact=exact, records=len(forget.records),
                 reference=membership_inputs.reference if membership_inputs is not None else "holdout",
                 tested=membership_inputs is not None, live=live, pool_expected=pool_expected, reference_ids=reference_ids,
                 requests=per_request, independent=independent,
                 tolerances={"mia_auc": policy.mia_auc, "extraction": policy.extraction, "audit": policy.membership,
                             "holdout_drop": policy.holdout_drop})
