"""The image checks (workers/engine/verification/image_checks.py) on evidence made to produce each
verdict: a no-op must not pass, a memorised creator is flagged, an over-forgotten model fails, and
an exact path whose sanity check fails raises the alarm."""

from __future__ import annotations

import numpy as np
import pytest

from workers.engine.verification import control as no_op
from workers.engine.verification.checks import Policy
from workers.engine.verification.image_checks import (
    CopyEvidence,
    CreatorClassifier,
    ImageEvidence,
    copy_evidence,
    copy_outcomes,
    image_verification_block,
    loss_inputs,
)

POLICY = Policy()
RNG = np.random.default_rng(0)
N = 200


def evidence(forget_shift: float = 0.0, copies: int = 0, style: float = 0.05, references: int = 4) -> ImageEvidence:
    """Losses of N forget and N held-out works (the forget ones shifted by `forget_shift`), the
    same under references that never saw them; `copies` of 100 samples copy an erased work; a
    share `style` of the samples is attributed to the erased creator, 0.05 of the references'."""
    rng = np.random.default_rng(1)
    hardness_f, hardness_h = rng.normal(1.0, 0.2, N), rng.normal(1.0, 0.2, N)
    refs_f = hardness_f[:, None] + rng.normal(0, 0.02, (N, references))
    refs_h = hardness_h[:, None] + rng.normal(0, 0.02, (N, references))
    target_f = hardness_f + forget_shift + rng.normal(0, 0.02, N)
    target_h = hardness_h + rng.normal(0, 0.02, N)
    out_f = np.zeros((N, references), dtype=bool)
    out_f[:, ::2] = True  # complementary pairs: half the references never saw each work
    # 100 creators of 2 works each: the audit counts creators, and fewer cannot pass its interval
    # (docs/unlearning-and-verification.md: a request of a few subjects goes to the exact path).
    subjects_f = np.asarray([f"creator-{i % 100}" for i in range(N)], dtype=object)
    subjects_h = np.asarray([f"held-{i % 100}" for i in range(N)], dtype=object)
    membership = loss_inputs(target_f, refs_f, out_f, target_h, refs_h, np.ones((N, references), dtype=bool),
                             "references", subjects_f, subjects_h)
    samples = 100
    forget_copies = np.r_[np.ones(copies), np.zeros(samples - copies)]
    return ImageEvidence(target_f, target_h, CopyEvidence(forget_copies, np.zeros(samples), 20, 20),
                         (rng.random(400) < style).astype(np.float64), (rng.random(400) < 0.05).astype(np.float64),
                         membership)


def verdicts(block):
    return {c["name"]: c["verdict"] for c in block["checks"]}


def judge(found: ImageEvidence, method: str = "salun", exact: bool = False):
    return image_verification_block(found, forget_ids=np.arange(N), method=method, exact=exact, live=4,
                                    pool_expected=4, policy=POLICY)


def test_a_model_that_never_saw_the_creator_passes_every_check():
    block = judge(evidence())
    assert verdicts(block) == {"mia_auc": "pass", "per_record_audit": "pass", "copies": "pass", "style": "pass"}
    assert block["verdict"] == "pass" and block["escalates"] is False


def test_a_memorised_creator_is_flagged_and_a_no_op_does_not_pass():
    original = judge(evidence(forget_shift=-0.3, copies=40, style=0.4), method=no_op.CONTROL_METHOD)
    assert verdicts(original) == {"mia_auc": "fail", "per_record_audit": "fail", "copies": "fail", "style": "fail"}
    control = no_op.entry(original)
    assert control["testable"] is True
    # A "method" that changed nothing: its result is the original's evidence, and it escalates.
    assert judge(evidence(forget_shift=-0.3, copies=40, style=0.4))["escalates"] is True
    assert no_op.blocking(control, judge(evidence(forget_shift=-0.3, copies=40, style=0.4)))


@pytest.mark.parametrize("signal", ["copies", "style"])
def test_copies_or_style_alone_are_enough_to_flag(signal):
    found = judge(evidence(**({"copies": 40} if signal == "copies" else {"style": 0.4})))
    assert verdicts(found)[signal] == "fail" and found["verdict"] == "fail"
    assert {name for name, verdict in verdicts(found).items() if verdict == "fail"} == {signal}


def test_an_over_forgotten_model_fails():
    # Forget works denoised far worse than works never seen stand out as well.
    found = judge(evidence(forget_shift=+0.4))
    assert verdicts(found)["mia_auc"] == "fail" and found["verdict"] == "fail"


def test_the_exact_paths_sanity_check_raises_the_alarm_when_it_fails():
    failing = judge(evidence(forget_shift=-0.3, copies=40), method="retrain", exact=True)
    assert failing["escalates"] is False, "an exact result never escalates"
    assert no_op.verdict_reasons(failing), "the exact path's failed sanity check is reported"
    assert not no_op.verdict_reasons(judge(evidence(), method="retrain", exact=True))


def test_without_references_the_style_and_audit_checks_are_inconclusive():
    found = evidence()
    bare = ImageEvidence(found.forget_losses, found.holdout_losses, found.copies, found.style_after, None, None)
    block = judge(bare)
    assert verdicts(block)["style"] == "inconclusive" and verdicts(block)["per_record_audit"] == "inconclusive"
    assert block["escalates"] is True


def test_copies_are_samples_within_the_distance_of_a_work():
    works = RNG.uniform(-1, 1, (5, 64)).astype(np.float32)
    near = works[[0, 3]] + 0.05
    far = RNG.uniform(-1, 1, (3, 64)).astype(np.float32)
    assert copy_outcomes(np.r_[near, far], works).tolist() == [1, 1, 0, 0, 0]
    split = copy_evidence(np.r_[near, near], works, far, seed=0)
    assert split.forget.tolist() == [1, 1] and split.holdout.tolist() == [0, 0] and split.holdout_works == 3


def test_the_creator_classifier_recognises_a_creators_mark():
    from tests.images.data import blobs, marked
    from workers.engine.families.image_diffusion import pixels_to_features

    works = np.r_[pixels_to_features(marked(40, seed=1)), pixels_to_features(blobs(40, seed=2))]
    creators = np.r_[np.zeros(40), np.ones(40)].astype(np.int64)
    classifier = CreatorClassifier(works, creators, 2, seed=0)
    fresh_marked, fresh_plain = pixels_to_features(marked(20, seed=9)), pixels_to_features(blobs(20, seed=10))
    assert classifier.attributed_to(fresh_marked, [0]).mean() > 0.9
    assert classifier.attributed_to(fresh_plain, [0]).mean() < 0.1
