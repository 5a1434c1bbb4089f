"""Per-request verdicts of a batch (workers/engine/verification/checks.py `request_checks`,
`block`): each request is judged over its own subjects; one request whose subjects are still
memorised fails the batch, while the other request's block shows its own pass."""

import numpy as np

from tests.engine.lira_scores import RECORDS_PER_SUBJECT, _inputs
from workers.engine.verification.checks import Evidence, Policy, Subjects, block, evidence_checks, request_checks
from workers.engine.verification.verdicts import overall

# The uncalibrated accuracy gap (no reference models here) at its tolerance before it became the
# 5-point false-pass bound: 150 subjects a request cannot show ±0.05 on it, and what is tested
# here is how the requests' verdicts combine.
POLICY = Policy(forget_gap=0.15)
SUBJECTS = 300
HALF = SUBJECTS // 2


def _batch(seed: int, memorised: bool):
    """300 subjects of 4 records: request "a" names subjects 0–149, request "b" 150–299; where
    `memorised`, three of b's subjects are still memorised (each record ≈ 5 sd above unseen).
    (The audit's rates count subjects, so a request needs on the order of a hundred subjects
    for its aggregate to be shown within tolerance.)
    Accuracy and losses look unseen for everyone: only the per-subject audit can tell."""
    owners = np.repeat(np.arange(SUBJECTS), RECORDS_PER_SUBJECT)
    shift = np.where(np.isin(owners, [155, 170, 293]), 5 * 0.95, 0.0) if memorised else None
    inputs = _inputs(seed, SUBJECTS, shift=shift)
    rng = np.random.default_rng(seed)
    n = SUBJECTS * RECORDS_PER_SUBJECT
    found = Evidence(forget_correct=(rng.random(n) < 0.8).astype(float), forget_losses=rng.exponential(0.5, n),
                     holdout_correct=(rng.random(n) < 0.8).astype(float), holdout_losses=rng.exponential(0.5, n),
                     before_correct=None)
    requests = {"a": owners < HALF, "b": owners >= HALF}
    return found, inputs, requests


def _block(found, inputs, requests):
    subjects = Subjects(inputs.forget_subjects, inputs.null_subjects)
    ids = np.arange(len(found.forget_correct))
    checks = evidence_checks(found, POLICY, inputs, ids, subjects)
    per_request = request_checks(found, POLICY, inputs, ids, subjects, requests)
    return checks, per_request, block(checks, POLICY, method="scrub", exact=False, records=len(ids),
                                      reference="references", tested=True, live=8, pool_expected=8,
                                      reference_ids=[], tolerances={}, requests=per_request)


def test_one_request_failing_fails_the_batch_and_the_other_shows_its_own_pass():
    found, inputs, requests = _batch(4, memorised=True)
    _, per_request, result = _block(found, inputs, requests)
    assert result["requests"] == {"a": "pass", "b": "fail"}
    assert result["verdict"] == "fail" and result["escalates"] is True
    assert any("request b" in reason for reason in result["reasons"])
    own_b = {c["name"]: c for c in result["request_checks"]["b"]["checks"]}
    assert own_b["per_record_audit"]["extra"]["subjects"] == HALF
    assert own_b["per_record_audit"]["extra"]["subjects_flagged"] == 3
    # Request a's own block: every check over its own subjects alone, and all of them pass.
    own_a = result["request_checks"]["a"]
    assert own_a["verdict"] == "pass" and {c["n"] for c in own_a["checks"]} == {HALF * RECORDS_PER_SUBJECT}
    assert overall(per_request["a"]) == "pass"


def test_a_batch_passes_only_when_every_request_does():
    found, inputs, requests = _batch(4, memorised=False)
    _, _, result = _block(found, inputs, requests)
    assert result["requests"] == {"a": "pass", "b": "pass"} and result["verdict"] == "pass"
    # A request of one subject cannot be shown to pass: the batch is not certified on its account.
    owners = np.repeat(np.arange(SUBJECTS), RECORDS_PER_SUBJECT)
    _, _, small = _block(found, inputs, {"a": owners < SUBJECTS - 1, "b": owners == SUBJECTS - 1})
    assert small["requests"]["b"] == "inconclusive" and small["verdict"] == "inconclusive"
