"""The forgetting checks of one unlearned model version, each an estimate with an interval and a
verdict (verdicts.py):

- `forget_accuracy_gap`: forget accuracy − holdout accuracy (two-sided: a model that forgot
  generalises to the forget records like to unseen ones, no better and no worse). Where the model
  has reference models the gap is calibrated by them, record by record: each forget record's
  correctness less the mean correctness of the references that never saw it, against the same
  difference on the holdout (a difference in differences). Hard records are hard for the
  references too, so the record-to-record noise cancels and a tighter tolerance applies
  (`reference_gap`); the references' smaller training sets shift both sides alike;
- `mia_auc`: loss-threshold attack (Yeom et al. 2018), AUC − 0.5 between forget and holdout
  records (two-sided: far below 0.5 the forget records stand out by their high loss);
- `per_record_audit`: offline LiRA against reference models or SISA shards (lira.py);
- `holdout_drop`: holdout accuracy before − after, paired on the same records (one-sided: the
  price in utility, not a forgetting figure). An approximate result must pass it; an exact
  one's is only noted (`utility_rule`).

The population checks compare with the holdout; the LiRA test, and the accuracy gap where there are
references, compare record by record. Every interval is at level 1 − 2α, each end a one-sided
1 − α bound (verdicts.py), so every verdict is a test at level α.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy.typing as npt

import numpy as np
import torch
from torch import nn

from app.config import get_settings
from app.unlearning.types import JsonValue
from workers.engine.verification import lira
from workers.engine.verification.scores import (
    LabelledSet,
    MembershipInputs,
    Networks,
    as_list,
    correct_and_losses,
    reference_membership_inputs,
    shard_membership_inputs,
)
from workers.engine.verification.intervals import (
    Interval,
    calibrated_difference,
    delong_auc,
    paired_difference,
    proportion_difference,
)
from workers.engine.verification.verdicts import (
    Check,
    UtilityRule,
    check,
    interval_alpha,
    notes,
    overall,
    reasons,
    rounded,
)


@dataclass(frozen=True)
class Policy:
    # Confidence level of every interval is 1 − alpha.
    alpha: float = 0.05
    # Largest |forget accuracy − holdout accuracy| (0.05 = 5 points).
    forget_gap: float = 0.05
    # Largest |forget − holdout accuracy gap| once calibrated by the reference models.
    reference_gap: float = 0.05
    # Largest |AUC − 0.5| of the loss-threshold attack.
    mia_auc: float = 0.10
    # Largest per-record LiRA advantage TPR − FPR (the setting `tolerance_audit`).
    membership: float = 0.15
    # Largest drop of holdout accuracy against the version before (0.02 = 2 points).
    holdout_drop: float = 0.02
    # Language models: largest excess of forget over holdout records extracted verbatim.
    extraction: float = 0.05
    # Per-record level q at which the LiRA test's TPR and FPR are counted.
    record_level: float = 0.05
    # δ of the ε lower bound.
    delta: float = 0.0


@dataclass(frozen=True)
class Subjects:
    """Each forget and each holdout record's subject (any labels that tell subjects apart): the
    clusters every interval treats as its unit (intervals.py)."""

    forget: np.ndarray | None = None
    holdout: np.ndarray | None = None

    def clustered(self) -> bool:
        return self.forget is not None


NO_SUBJECTS = Subjects()


def accuracy_gap_check(forget_correct: np.ndarray, holdout_correct: np.ndarray, policy: Policy,
                       subjects: Subjects = NO_SUBJECTS) -> Check:
    found = proportion_difference(forget_correct, holdout_correct, interval_alpha(policy.alpha),
                                  a_clusters=subjects.forget, b_clusters=subjects.holdout)
    return check("forget_accuracy_gap", label="forget − holdout accuracy", attack=None, test="newcombe_wilson",
                 estimate=None if found is None else found[0], interval=None if found is None else found[1],
                 alpha=policy.alpha, tolerance=policy.forget_gap, two_sided=True, n=len(forget_correct),
                 reference="holdout", unavailable="needs both a forget and a holdout set",
                 holdout_records=len(holdout_correct), clustered_by_subject=subjects.clustered())


def auc_check(name: str, attack: str, label: str, member_scores: np.ndarray, nonmember_scores: np.ndarray,
              policy: Policy, subjects: Subjects = NO_SUBJECTS, reference: str = "holdout") -> Check:
    """AUC − 0.5 of an attack whose higher score means member, forget (members) against holdout
    records, DeLong (clustered by subject after Obuchowski), two-sided under the `mia_auc`
    tolerance."""
    found = delong_auc(member_scores, nonmember_scores, interval_alpha(policy.alpha),
                       member_clusters=subjects.forget, nonmember_clusters=subjects.holdout)
    return check(name, label=label, attack=attack, test="delong",
                 estimate=None if found is None else found[0] - 0.5,
                 interval=None if found is None else (found[1][0] - 0.5, found[1][1] - 0.5),
                 alpha=policy.alpha, tolerance=policy.mia_auc, two_sided=True, n=len(member_scores),
                 reference=reference, unavailable="needs both a forget and a holdout set",
                 auc=None if found is None else found[0], holdout_records=len(nonmember_scores),
                 clustered_by_subject=subjects.clustered())


def mia_auc_check(forget_losses: np.ndarray, holdout_losses: np.ndarray, policy: Policy,
                  subjects: Subjects = NO_SUBJECTS) -> Check:
    return auc_check("mia_auc", "loss_threshold", "membership-inference AUC − 0.5", -np.asarray(forget_losses),
                     -np.asarray(holdout_losses), policy, subjects)


def calibrated_auc_check(name: str, attack: str, label: str, inputs: MembershipInputs, policy: Policy,
                         subjects: Subjects = NO_SUBJECTS) -> Check:
    """AUC − 0.5 of an attack judged against what the references that never saw a record expect:
    each record's score under the target less the mean score of its OUT references (a null record
    against one reference per complementary pair, as in the LiRA test), forget against holdout.
    A forget record that is hard for every model (a text carrying a secret) is hard for its OUT
    references too, so it no longer looks unfamiliar to a model that never saw it; a model that
    still remembers it scores it above what they expect."""
    def expected(references: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        counts = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, np.where(mask, references, 0.0).sum(axis=1) / np.maximum(counts, 1), np.nan)

    null_out = lira.matched_null_out(inputs.forget_out, inputs.null_out)
    member = np.asarray(inputs.forget_target, dtype=np.float64) - expected(inputs.forget_references, inputs.forget_out)
    nonmember = np.asarray(inputs.null_target, dtype=np.float64) - expected(inputs.null_references, null_out)
    keep_member, keep_nonmember = ~np.isnan(member), ~np.isnan(nonmember)
    kept = Subjects(None if subjects.forget is None else np.asarray(subjects.forget)[keep_member],
                    None if subjects.holdout is None else np.asarray(subjects.holdout)[keep_nonmember])
    return auc_check(name, attack, f"{label}, calibrated by references", member[keep_member],
                     nonmember[keep_nonmember], policy, kept, reference=inputs.reference)


def reference_gap_check(forget_correct: np.ndarray, inputs: MembershipInputs, holdout_correct: np.ndarray,
                        policy: Policy, subjects: Subjects = NO_SUBJECTS) -> Check:
    """The accuracy gap calibrated by the references: per forget record, the target's correctness
    less the mean over the references that never saw it; per holdout record, the same over all
    references (none saw it); the estimate is the difference of the two means."""
    if inputs.forget_references_correct is None or inputs.null_references_correct is None:
        raise ValueError("the calibrated gap needs the references' correctness")
    out = np.asarray(inputs.forget_out, dtype=bool)
    counts = out.sum(axis=1)
    holdout_records = len(holdout_correct)

    def gap(found: tuple[float, Interval] | None, unavailable: str, **figures: JsonValue) -> Check:
        return check("forget_accuracy_gap", label="forget − holdout accuracy, calibrated by references", attack=None,
                     test="welch", estimate=None if found is None else found[0],
                     interval=None if found is None else found[1], alpha=policy.alpha,
                     tolerance=policy.reference_gap, two_sided=True, n=len(forget_correct), reference="references",
                     unavailable=unavailable, figures={"holdout_records": holdout_records,
                                                       "clustered_by_subject": subjects.clustered()}, **figures)

    if len(forget_correct) and (counts == 0).any():
        return gap(None, f"{int((counts == 0).sum())} forget records have no reference that never saw them")
    forget_refs = np.where(out, inputs.forget_references_correct, 0.0).sum(axis=1) / np.maximum(counts, 1)
    null_refs = (np.asarray(inputs.null_references_correct, dtype=np.float64).mean(axis=1) if len(holdout_correct)
                 else np.zeros(0))
    found = calibrated_difference(np.asarray(forget_correct) - forget_refs, np.asarray(holdout_correct) - null_refs,
                                  interval_alpha(policy.alpha), forget_clusters=subjects.forget,
                                  null_clusters=subjects.holdout)
    return gap(found, "needs both a forget and a holdout set",
               forget_accuracy=float(np.mean(forget_correct)) if len(forget_correct) else None,
               holdout_accuracy=float(np.mean(holdout_correct)) if len(holdout_correct) else None,
               references_forget_accuracy=float(forget_refs.mean()) if len(forget_refs) else None,
               references_holdout_accuracy=float(null_refs.mean()) if len(null_refs) else None)


def holdout_drop_check(before_correct: np.ndarray, after_correct: np.ndarray, policy: Policy,
                       label: str = "holdout accuracy drop", clusters: np.ndarray | None = None) -> Check:
    found = paired_difference(before_correct, after_correct, interval_alpha(policy.alpha), clusters=clusters)
    return replace(check("holdout_drop", label=label, attack=None, test="bootstrap",
                 estimate=None if found is None else found[0], interval=None if found is None else found[1],
                 alpha=policy.alpha, tolerance=policy.holdout_drop, two_sided=False, n=len(after_correct),
                 reference="holdout", unavailable="needs a holdout set"), utility=True)


def membership_check(inputs: MembershipInputs, policy: Policy, record_ids: np.ndarray | None = None) -> Check:
    # Null records are OUT for every reference; each is averaged over the OUT references of a
    # tested record (one per complementary pair) so both residuals are equally noisy.
    forget = lira.residuals(inputs.forget_target, inputs.forget_references, inputs.forget_out)
    null = lira.residuals(inputs.null_target, inputs.null_references,
                          lira.matched_null_out(inputs.forget_out, inputs.null_out))
    return lira.lira_check(forget, null, alpha=policy.alpha, tolerance=policy.membership, record_level=policy.record_level,
                            delta=policy.delta, reference=inputs.reference, record_ids=record_ids,
                            forget_subjects=inputs.forget_subjects, null_subjects=inputs.null_subjects)


def summary(checks: Sequence[Check], policy: Policy, *, utility: UtilityRule = "fail") -> dict[str, JsonValue]:
    """The verification block: the overall verdict, why, and every check. `utility` says how
    utility checks weigh (verdicts.py `overall`): "required" for an approximate result, "noted"
    for an exact one's sanity check."""
    return {"verdict": overall(checks, utility=utility), "alpha": policy.alpha,
            "reasons": reasons(checks, utility=utility), "notes": notes(checks, utility=utility),
            "checks": [c.as_dict() for c in checks]}


def utility_rule(exact: bool) -> UtilityRule:
    """An approximate result must prove its price in accuracy; an exact one's is noted."""
    return "noted" if exact else "required"


def stored_checks(block: Mapping[str, JsonValue] | None) -> list[Check]:
    """The checks of a stored verification block (`summary`, `block`), typed again: job results
    and certificates written by any release read back."""
    stored = (block or {}).get("checks")
    if not isinstance(stored, Sequence) or isinstance(stored, str):
        return []
    return [Check.from_json(found) for found in stored if isinstance(found, Mapping)]


@dataclass(frozen=True)
class Evidence:
    """Each record's correctness and loss under the new version (forget and holdout records) and
    the holdout's correctness under the version before: what the population checks read."""

    forget_correct: np.ndarray
    forget_losses: np.ndarray
    holdout_correct: np.ndarray
    holdout_losses: np.ndarray
    before_correct: np.ndarray | None

    def forget_part(self, mask: np.ndarray) -> Evidence:
        """The same evidence on the forget records where `mask` is true (one request's)."""
        return replace(self, forget_correct=self.forget_correct[mask], forget_losses=self.forget_losses[mask])


def evidence(family: Any, after: Networks, before: Networks | None, forget: LabelledSet,
             holdout: LabelledSet | None) -> Evidence:
    empty = (torch.zeros((0, forget[0].shape[1])), torch.zeros(0, dtype=torch.int64))
    holdout = holdout if holdout is not None else empty
    forget_correct, forget_losses = correct_and_losses(family, after, *forget)
    holdout_correct, holdout_losses = correct_and_losses(family, after, *holdout)
    before_correct = correct_and_losses(family, before, *holdout)[0] if before is not None else None
    return Evidence(forget_correct, forget_losses, holdout_correct, holdout_losses, before_correct)


def forgetting_checks(family: Any, after: Networks, before: Networks | None, forget: LabelledSet,
                      holdout: LabelledSet | None, policy: Policy, membership_inputs: MembershipInputs | None = None,
                      forget_ids: np.ndarray | None = None, subjects: Subjects | None = None) -> list[Check]:
    """Every check of one new version: population checks against the holdout, the utility drop
    against the version before, and the per-record LiRA test where there are references. The
    intervals count subjects, not records, where the records' `subjects` are known (else those
    of `membership_inputs`)."""
    return evidence_checks(evidence(family, after, before, forget, holdout), policy, membership_inputs, forget_ids,
                           subjects)


def evidence_checks(found: Evidence, policy: Policy, membership_inputs: MembershipInputs | None = None,
                    forget_ids: np.ndarray | None = None, subjects: Subjects | None = None) -> list[Check]:
    """`forgetting_checks` from the records' evidence."""
    if subjects is None:
        subjects = (Subjects(membership_inputs.forget_subjects, membership_inputs.null_subjects)
                    if membership_inputs is not None else NO_SUBJECTS)
    if membership_inputs is not None and membership_inputs.forget_references_correct is not None:
        gap = reference_gap_check(found.forget_correct, membership_inputs, found.holdout_correct, policy, subjects)
    else:
        gap = accuracy_gap_check(found.forget_correct, found.holdout_correct, policy, subjects)
    checks = [gap, mia_auc_check(found.forget_losses, found.holdout_losses, policy, subjects)]
    if found.before_correct is not None:
        checks.append(holdout_drop_check(found.before_correct, found.holdout_correct, policy,
                                         clusters=subjects.holdout))
    if membership_inputs is not None:
        checks.append(membership_check(membership_inputs, policy, forget_ids))
    return checks


def request_checks(found: Evidence, policy: Policy, membership_inputs: MembershipInputs | None,
                   forget_ids: np.ndarray, subjects: Subjects,
                   requests: Mapping[str, np.ndarray]) -> dict[str, list[Check]]:
    """Each request's own checks: every check on the forget records of that request's subjects
    alone (`requests` maps a request id to a mask over the forget records), against the same
    holdout and references. Holm runs over the request's own subjects."""
    out: dict[str, list[Check]] = {}
    for request_id, mask in requests.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            # None of this request's subjects has a forget record in this model (a subject held
            # out, or one of another dataset): the batch's checks say all there is.
            continue
        inputs = membership_inputs.forget_part(mask) if membership_inputs is not None else None
        own = Subjects(None if subjects.forget is None else np.asarray(subjects.forget)[mask], subjects.holdout)
        out[request_id] = evidence_checks(found.forget_part(mask), policy, inputs, np.asarray(forget_ids)[mask], own)
    return out


# The job's block: the policy in force and every check of one new version.


def policy_from_settings(alpha: float | None = None) -> Policy:
    """The policy of app/config.py (the deprecated fixed thresholds replace their tolerance), at
    level `alpha` instead of the setting's where given (one of several looks)."""
    settings = get_settings()
    tolerances = settings.verification_tolerances()
    return Policy(alpha=settings.verification_alpha if alpha is None else alpha, forget_gap=tolerances["forget_gap"],
                  reference_gap=tolerances["reference_gap"], mia_auc=tolerances["mia_auc"],
                  membership=tolerances["audit"], holdout_drop=tolerances["holdout_drop"],
                  extraction=tolerances["extraction"], record_level=settings.audit_record_level, delta=settings.audit_delta)


def verification_block(family: Any, *, before: Networks | None, after: Networks, forget: LabelledSet,
                       holdout: LabelledSet | None, forget_ids: np.ndarray,
                       method: str, exact: bool, references: Sequence[nn.Module] = (),
                       forget_out: np.ndarray | None = None, reference_ids: Sequence[str] = (),
                       pool_expected: int = 0, forget_shards: np.ndarray | None = None,
                       subjects: tuple[np.ndarray, np.ndarray] | None = None,
                       requests: Mapping[str, np.ndarray] | None = None, alpha: float | None = None,
                       independent: bool = False, clustered_by_source: bool = False) -> dict[str, JsonValue]:
    """The verdicts of one new version, as stored in the job, the certificate and the request.

    `references` are the model's live reference networks with `forget_out` [n_forget, K] (which
    never saw which forget record); `forget_shards` the shard of each forget record of a SISA
    model. `pool_expected` is the pool the model should have: with fewer live references the
    LiRA verdict says how many are missing, and where they are too few it cannot run. `subjects`
    labels each forget and each holdout record with its subject, so LiRA judges subjects.
    `requests` maps each request of a batch to a mask over the forget records (its subjects'):
    with more than one, each gets its own verdict (`block`). `alpha` overrides the level (a look
    of several); `independent` says the references and holdout judged none of the tuning.
    `clustered_by_source` says the forget records' labels in `subjects` join subjects and sources
    (a remediated slice), which the block records as `clusters`."""
    policy = policy_from_settings(alpha)
    inputs, reference = None, "holdout"
    has_holdout = holdout is not None and int(holdout[1].shape[0]) > 0
    if forget_shards is not None and len(as_list(after)) > 1 and holdout is not None and has_holdout:
        inputs, reference = shard_membership_inputs(family, as_list(after), forget, forget_shards, holdout), "shards"
    elif references and holdout is not None and has_holdout and forget_out is not None:
        inputs = reference_membership_inputs(family, after, list(references), forget, forget_out, holdout)
        reference = "references"
    if inputs is not None and subjects is not None:
        inputs = replace(inputs, forget_subjects=subjects[0], null_subjects=subjects[1])
    labels = Subjects(*subjects) if subjects is not None else None
    found = evidence(family, after, before, forget, holdout)
    checks = evidence_checks(found, policy, inputs, forget_ids, labels)
    per_request = (request_checks(found, policy, inputs, forget_ids, labels or NO_SUBJECTS, requests)
                   if requests and len(requests) > 1 else None)
    found_block = block(checks, policy, method=method, exact=exact, records=len(forget_ids), reference=reference,
                        tested=inputs is not None, live=len(references), pool_expected=pool_expected,
                        reference_ids=reference_ids, requests=per_request, independent=independent,
                        tolerances={"forget_gap": policy.forget_gap, "reference_gap": policy.reference_gap,
                                    "mia_auc": policy.mia_auc, "audit": policy.membership,
                                    "holdout_drop": policy.holdout_drop})
    if clustered_by_source:
        found_block["clusters"] = "subjects and sources"
    return found_block


def block(checks: list[Check], policy: Policy, *, method: str, exact: bool, records: int, reference: str,
          tested: bool, live: int, pool_expected: int, reference_ids: Sequence[str],
          tolerances: dict[str, float], requests: Mapping[str, list[Check]] | None = None,
          independent: bool = False) -> dict[str, JsonValue]:
    """The verification block of any family from its checks: a model that should have
    `pool_expected` references but was not `tested` gets an inconclusive LiRA check ("too few
    references"), and one on a partial pool says how many are live.

    With `requests` (each request's own checks, `request_checks`), every request gets its own
    verdict over its own subjects (`requests`: id → verdict, `request_checks`: id → block), and
    the batch passes only if every request does: the worst request's verdict is the batch's."""
    note = _pool_note(live, pool_expected)
    checks = _with_pool(checks, policy, records=records, tested=tested, note=note, pool_expected=pool_expected)
    # An approximate result must prove its price in accuracy as well as its forgetting.
    found = summary(checks, policy, utility=utility_rule(exact))
    if requests:
        own = {request_id: summary(_with_pool(found_checks, policy, records=found_checks[0].n if found_checks else 0,
                                              tested=tested, note=note, pool_expected=pool_expected), policy,
                                   utility=utility_rule(exact))
               for request_id, found_checks in requests.items()}
        verdicts = {request_id: str(b["verdict"]) for request_id, b in own.items()}
        failing = {request_id: v for request_id, v in verdicts.items() if v != "pass"}
        if failing:
            worst = "fail" if "fail" in failing.values() or found["verdict"] == "fail" else "inconclusive"
            found["verdict"] = worst
            earlier = found["reasons"] if isinstance(found["reasons"], list) else []
            found["reasons"] = [*earlier, *(f"request {request_id}: its own subjects' verdict is {verdict}"
                                            for request_id, verdict in failing.items())]
        found["requests"] = verdicts
        found["request_checks"] = own
    membership_result = next((c for c in checks if c.name == "per_record_audit"), None)
    found.update({
        "method": method, "exact": exact,
        # An exact method records its verdicts but never escalates on them.
        "escalates": not exact and found["verdict"] != "pass",
        "attacks": sorted({c.attack for c in checks if c.attack}), "records": records,
        "reference": reference,
        "epsilon_lower_bound": membership_result.extra.get("epsilon_lower_bound") if membership_result else None,
        "tolerances": tolerances,
        "references": {"live": live, "expected": pool_expected, "ids": list(reference_ids),
                       **({"note": note} if note else {})},
        # The verdict's references and holdout are the confirmation half, apart from those the
        # stopping rules, loss targets and repair were tuned on.
        "confirmation": independent,
    })
    return {key: rounded(value) for key, value in found.items()}


def _pool_note(live: int, pool_expected: int) -> str | None:
    if pool_expected and live < pool_expected:
        return (f"{live} of {pool_expected} reference models are live; the others held erased subjects "
                f"and await their refill job")
    return None


def _with_pool(checks: list[Check], policy: Policy, *, records: int, tested: bool, note: str | None,
               pool_expected: int) -> list[Check]:
    """The checks with what the reference pool says: a LiRA check that could not run for too few
    references, or a note on one that ran on a partial pool."""
    if pool_expected and not tested:
        return [*checks, check("per_record_audit", label="per-record audit", attack="offline_lira",
                               test="mover_clopper_pearson", estimate=None, interval=None, alpha=policy.alpha,
                               tolerance=policy.membership, two_sided=False, n=records, reference="references",
                               unavailable=f"too few references ({note or 'no holdout to calibrate against'})")]
    if note:
        # A LiRA test that still ran rests on fewer references: its verdict says so.
        return [replace(c, reason=f"{c.reason} ({note})") if c.name == "per_record_audit" else c for c in checks]
    return checks
