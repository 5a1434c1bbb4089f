"""The verdicts of a language model's new version: the tabular block (workers/engine/forgetting.py)
with checks on texts, each record one text, from the per-record figures of
workers/engine/text_verification.py:

- `mia_auc`: the loss attack, mean token loss per record, forget vs holdout (two-sided);
- `min_k_plus_plus_auc`: Min-K%++ (Zhang et al. 2024), higher score = member, forget vs holdout
  (two-sided, the same tolerance): far below 0.5 the forget records stand out as less familiar
  than unseen text, which gives them away too;
- `extraction`: the share of forget records greedy decoding gives back verbatim less the share of
  held-out records (Newcombe, one-sided: unseen text that the model completes by its template is
  no memorisation, only an excess over it is);
- `per_record_audit`: offline LiRA (workers/engine/audit.py) on the record's mean token
  log-likelihood against the reference models that never saw it, or a SISA model's other shards;
- `holdout_drop` (utility): held-out next-token accuracy before − after, paired per record (each
  record's share of tokens predicted), paired bootstrap.

Each check reuses the tabular one where there is one, so both families read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.engine.forgetting import (
    AuditInputs,
    Policy,
    audit_check,
    auc_check,
    block,
    holdout_drop_check,
    mia_auc_check,
    policy_from_settings,
)
from workers.engine.text_verification import TokenStatistics
from workers.engine.verdicts import Check, check, interval_alpha, proportion_difference


def score(statistics: TokenStatistics) -> np.ndarray:
    """A record's score under one network for the audit: its mean token log-likelihood, higher
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
                audit_inputs: AuditInputs | None = None) -> list[Check]:
    """Every check of a language model's new version, from the new version's per-record figures
    on the forget and held-out records and the version before's on the same held-out records."""
    checks = [mia_auc_check(forget.loss, holdout.loss, policy), min_k_auc_check(forget.min_k, holdout.min_k, policy),
              extraction_check(forget_extracted, holdout_extracted, policy)]
    if audit_inputs is not None:
        checks.append(audit_check(audit_inputs, policy, forget.records))
    if before_holdout is not None:
        if not np.array_equal(before_holdout.records, holdout.records):
            raise ValueError("the holdout drop pairs the same records before and after")
        checks.append(holdout_drop_check(before_holdout.accuracy, holdout.accuracy, policy,
                                         label="held-out next-token accuracy drop"))
    return checks


def text_verification_block(*, forget: TokenStatistics, holdout: TokenStatistics,
                            before_holdout: TokenStatistics | None, forget_extracted: np.ndarray,
                            holdout_extracted: np.ndarray, method: str, exact: bool,
                            audit_inputs: AuditInputs | None = None, live: int = 0, pool_expected: int = 0,
                            reference_ids: Sequence[str] = (), policy: Policy | None = None) -> dict[str, Any]:
    """The block of `forgetting.verification_block` for a language model. `audit_inputs` are the
    scores (`score`) of the forget and held-out records under the new version and its `live`
    references or shards; without them a model that should have `pool_expected` references says
    it has too few, and one that has none runs no audit, as for the tabular families."""
    policy = policy or policy_from_settings()
    checks = text_checks(forget, holdout, before_holdout, forget_extracted, holdout_extracted, policy, audit_inputs)
    return block(checks, policy, method=method, exact=exact, records=len(forget.records),
                 reference=audit_inputs.reference if audit_inputs is not None else "holdout",
                 audited=audit_inputs is not None, live=live, pool_expected=pool_expected, reference_ids=reference_ids,
                 tolerances={"mia_auc": policy.mia_auc, "extraction": policy.extraction, "audit": policy.audit,
                             "holdout_drop": policy.holdout_drop})
