"""Repair before escalation (workers/engine/unlearning/repair.py, job.verified): when a few
records the per-record audit still recognises are all that blocks an approximate result, they
are unlearned alone and the result is verified again; anything else escalates as before."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from app.unlearning.types import Shard
from workers.engine.unlearning import job, repair
from workers.engine.verification.checks import stored_checks
from workers.engine.verification.verdicts import Check


def check(name, verdict, *, utility=False, interval=(0.0, 0.05), tolerance=0.15, n=400, flagged=()):
    """A check as stored in a job's verification block (Check.as_dict)."""
    return Check(name, None, "clopper_pearson", 0.01, interval, 0.05, tolerance, False, n, "references", verdict,
                 f"{name}: {verdict}", {"flagged": list(flagged)}, utility=utility).as_dict()


def block(*checks):
    return {"verdict": "fail", "checks": list(checks)}


def flags(stored):
    """What the job repairs for a stored block: its checks read back typed, then the rule."""
    return repair.repairable(stored_checks(stored))


AUDIT_FLAGS = check("per_record_audit", "fail", flagged=(17, 42))
# A no-op control whose checks fail the original: they can see the subjects.
TESTABLE = block(check("mia_auc", "fail"))


def test_only_a_few_flags_with_everything_else_passing_are_repairable():
    passing = [check("forget_accuracy_gap", "pass"), check("mia_auc", "pass")]
    assert flags(block(*passing, AUDIT_FLAGS)) == [17, 42]
    # A utility check that could not tell does not stand in the way; one that failed does.
    assert flags(block(*passing, check("holdout_drop", "inconclusive", utility=True), AUDIT_FLAGS)) == [17, 42]
    assert flags(block(*passing, check("holdout_drop", "fail", utility=True), AUDIT_FLAGS)) == []
    # Any other forgetting check short of a pass, and there is more wrong than a few records.
    assert flags(block(check("forget_accuracy_gap", "inconclusive"), passing[1], AUDIT_FLAGS)) == []
    # The audit's own aggregate beyond its tolerance: not a few stragglers.
    wide = check("per_record_audit", "fail", interval=(0.1, 0.3), flagged=(17,))
    assert flags(block(*passing, wide)) == []
    # More than 5 % of the forget records flagged.
    many = check("per_record_audit", "fail", n=40, flagged=(1, 2, 3))
    assert flags(block(*passing, many)) == []
    assert flags(block(*passing, check("per_record_audit", "pass"))) == []
    assert flags(None) == [] and flags(block(*passing)) == []


class Figures:
    def __init__(self, verdicts):
        self.verdicts = verdicts


@pytest.fixture
def scripted(monkeypatch):
    """verify_outcome/check_outcome and the repair itself scripted per outcome, so the control
    flow is tested alone (the repair's maths are tested with neggrad_plus's per-record targets)."""
    calls = {"repaired": [], "alphas": []}
    blocks = {}

    def verify_outcome(ctx, outcome, shards, alpha=None):
        calls["alphas"].append(alpha)
        return Figures(blocks[outcome.details["name"]])

    def check_outcome(outcome, figures, control):
        return [] if figures.verdicts["verdict"] == "pass" else [f"{outcome.details['name']} blocked"]

    def repaired(ctx, outcome, flagged):
        calls["repaired"].append(sorted(flagged.tolist()))
        return replace(outcome, details={"name": "repaired"})

    monkeypatch.setattr(job.verification, "verify_outcome", verify_outcome)
    monkeypatch.setattr(job.verification, "check_outcome", check_outcome)
    monkeypatch.setattr(job, "repaired", repaired)
    return blocks, calls


class Ctx:
    old_shards = ()
    spec = SimpleNamespace(data_kind="tabular")
    references = ("a reference",)


CTX = Ctx()


def outcome(name, method="finetune"):
    return job.CandidateVersion(method, None, (Shard(0, "w"),), {}, {"name": name})


def test_a_repair_that_passes_replaces_the_result(scripted):
    blocks, calls = scripted
    blocks["method"] = block(check("forget_accuracy_gap", "pass"), AUDIT_FLAGS)
    blocks["repaired"] = {"verdict": "pass", "checks": []}
    kept, figures, failed = job.verified(CTX, outcome("method"), TESTABLE)
    assert calls["repaired"] == [[17, 42]] and kept.details["name"] == "repaired" and failed == []
    assert figures.verdicts["verdict"] == "pass"


def test_a_repair_that_fails_keeps_the_original_and_says_so(scripted):
    blocks, calls = scripted
    blocks["method"] = block(check("forget_accuracy_gap", "pass"), AUDIT_FLAGS)
    blocks["repaired"] = block(check("forget_accuracy_gap", "pass"), check("per_record_audit", "fail", flagged=(42,)))
    kept, figures, failed = job.verified(CTX, outcome("method"), TESTABLE)
    assert kept.details["name"] == "method" and figures.verdicts is blocks["method"]
    assert failed[0] == "method blocked" and "a repair of the 2 flagged records did not pass either" in failed[1]


def test_no_repair_where_more_than_flags_block_or_for_exact_methods(scripted):
    blocks, calls = scripted
    blocks["method"] = block(check("forget_accuracy_gap", "inconclusive"), AUDIT_FLAGS)
    assert job.verified(CTX, outcome("method"), TESTABLE)[2] == ["method blocked"] and calls["repaired"] == []
    blocks["exact"] = block(AUDIT_FLAGS)
    assert job.verified(CTX, outcome("exact", method="retrain"), TESTABLE)[2] == [] and calls["repaired"] == []


def test_no_repair_where_the_checks_cannot_see_the_subjects(scripted):
    # The original passes every check: no repair can make a pass mean anything.
    blocks, calls = scripted
    blocks["method"] = block(check("forget_accuracy_gap", "pass"), AUDIT_FLAGS)
    powerless = {"verdict": "pass", "checks": [check("mia_auc", "pass")]}
    blocks["repaired"] = {"verdict": "pass", "checks": []}
    assert job.verified(CTX, outcome("method"), powerless)[2] == ["method blocked"] and calls["repaired"] == []
    assert job.verified(CTX, outcome("method"), TESTABLE)[2] == [] and calls["repaired"] == [[17, 42]]


def test_a_stored_block_reads_back_as_the_checks_that_wrote_it():
    # A job result or certificate stores Check.as_dict; reading it back gives the same checks, so
    # the repair decides on typed checks whatever release wrote the block.
    import numpy as np

    from workers.engine.verification.checks import Policy, membership_check, summary
    from workers.engine.verification.scores import reference_inputs

    rng = np.random.default_rng(3)
    refs = rng.normal(0, 1, (60, 4))
    inputs = reference_inputs(refs.mean(axis=1) + 3.0 * (np.arange(60) < 2), refs, np.ones((60, 4), bool),
                              rng.normal(0, 1, 200), rng.normal(0, 1, (200, 4)))
    written = [membership_check(inputs, Policy(), np.arange(60)), check_from_name("mia_auc")]
    stored = summary(written, Policy())
    read = stored_checks(stored)
    assert [c.as_dict() for c in read] == stored["checks"]
    assert read[0].verdict == written[0].verdict and read[0].extra["flagged"] == written[0].extra["flagged"]
    assert read[0].interval is not None and isinstance(read[0].interval, tuple)


def check_from_name(name):
    return Check.from_json(check(name, "pass"))


def test_a_repair_spends_alpha_across_both_looks_and_keeps_the_first_looks_block(scripted):
    from app.config import get_settings

    blocks, calls = scripted
    blocks["method"] = block(check("forget_accuracy_gap", "pass"), AUDIT_FLAGS)
    blocks["repaired"] = {"verdict": "pass", "checks": []}
    kept, _, failed = job.verified(CTX, outcome("method"), TESTABLE)
    half = get_settings().verification_alpha / 2
    assert failed == [] and calls["alphas"] == [half, half]
    assert kept.details["repair"]["first_look"] is blocks["method"]
    # No repair can follow an exact method, or a SISA result of several networks: the one look
    # keeps the whole α.
    calls["alphas"].clear()
    job.verified(CTX, outcome("method", method="retrain"), TESTABLE)
    several = replace(outcome("method"), shards=(Shard(0, "a"), Shard(1, "b")))
    job.verified(CTX, several, TESTABLE)
    assert calls["alphas"] and set(calls["alphas"]) == {None}
