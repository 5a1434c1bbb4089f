"""An image generator's forgetting checks (image_diffusion): do its samples and its denoising still
betray the erased creators' works?

Three signals, each compared with what a model that never saw the works does:
- membership: the denoising loss of each erased work (`loss_per_example`: fixed timesteps, fixed
  noise), a diffusion model's membership signal (Carlini et al. 2023; Matsumoto et al. 2023).
  As plain checks: `mia_auc`, the loss attack against held-out works (two-sided: an over-forgotten
  work, denoised worse than unseen ones, gives itself away too), each work's loss calibrated by
  the references that never saw it where there are some (`calibrated_losses`: a creator's style
  makes its works harder for every model that never saw them), and `per_record_audit`, offline
  LiRA (lira.py) on the loss against the reference models that never saw the creator, or a SISA
  model's other shards, judged per creator;
- `copies`: N generated samples, and the share within an ℓ2 distance (root mean square over the
  pixels, in [-1, 1] units) of an erased work, against the share within that distance of works of
  held-out creators, as many of them as there are erased works (Carlini et al. 2023, "Extracting
  Training Data from Diffusion Models"; pretrained copy detectors such as SSCD cannot be
  downloaded here). The two halves of the samples are tested against the two sets, so the shares
  are independent (Newcombe), one-sided: only an excess of copies is memorisation;
- `style`: a creator classifier trained inside the job on the dataset's works (never stored)
  attributes each sample to a creator; the share of the new version's samples it attributes to an
  erased creator, against the share of the samples of reference models that never saw them
  (Newcombe, one-sided).

The copy and style excesses use the `extraction` tolerance, the language models' verbatim
extraction excess: all three are "the model gives back more of the erased works than a model
that never saw them". The block is the tabular one (checks.py, `block`), so the job, the no-op
control, the escalation and the certificate read it like any other family's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from app.unlearning.types import JsonValue
from workers.engine.verification.checks import Policy, block, membership_check, mia_auc_check, policy_from_settings
from workers.engine.verification.intervals import proportion_difference
from workers.engine.verification.scores import MembershipInputs
from workers.engine.verification.verdicts import Check, check, interval_alpha

Floats = npt.NDArray[np.float64]
Pixels = npt.NDArray[np.float32]

# Samples each model draws for the copy and style checks.
SAMPLES = 128
# Root-mean-square pixel distance (pixels in [-1, 1]) within which a sample copies a work.
COPY_DISTANCE = 0.25
# The creator classifier: one hidden layer, Adam, a fixed number of passes.
CLASSIFIER_HIDDEN = 64
CLASSIFIER_EPOCHS = 40


def nearest_distances(samples: Pixels, works: Pixels) -> Floats:
    """Each sample's root-mean-square pixel distance to its nearest work [n_samples]."""
    if len(works) == 0 or len(samples) == 0:
        return np.full(len(samples), np.inf)
    a = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(works, dtype=np.float32))
    distances = torch.cdist(a, b).min(dim=1).values / float(np.sqrt(a.shape[1]))
    return distances.double().numpy()


def copy_outcomes(samples: Pixels, works: Pixels, distance: float = COPY_DISTANCE) -> Floats:
    """1 per sample within `distance` of some work, else 0."""
    return (nearest_distances(samples, works) <= distance).astype(np.float64)


@dataclass(frozen=True)
class CopyEvidence:
    """0/1 per sample: the first half against the erased works, the second against as many works
    of held-out creators."""

    forget: Floats
    holdout: Floats
    forget_works: int
    holdout_works: int


def copy_evidence(samples: Pixels, forget_works: Pixels, holdout_works: Pixels, seed: int,
                  distance: float = COPY_DISTANCE) -> CopyEvidence:
    half = len(samples) // 2
    rng = np.random.default_rng(seed)
    chosen = holdout_works[np.sort(rng.permutation(len(holdout_works))[:len(forget_works)])]
    return CopyEvidence(copy_outcomes(samples[:half], forget_works, distance),
                        copy_outcomes(samples[half:], chosen, distance), len(forget_works), len(chosen))


def copies_check(evidence: CopyEvidence, policy: Policy) -> Check:
    found = proportion_difference(evidence.forget, evidence.holdout, interval_alpha(policy.alpha))
    return check("copies", label="share of samples copying an erased work − a held-out creator's",
                 attack="sample_copies", test="newcombe_wilson", estimate=None if found is None else found[0],
                 interval=None if found is None else found[1], alpha=policy.alpha, tolerance=policy.extraction,
                 two_sided=False, n=len(evidence.forget), reference="holdout",
                 unavailable="needs samples, erased works and held-out works",
                 forget_copies=int(evidence.forget.sum()), holdout_copies=int(evidence.holdout.sum()),
                 holdout_samples=len(evidence.holdout), forget_works=evidence.forget_works,
                 holdout_works=evidence.holdout_works, distance=COPY_DISTANCE)


class CreatorClassifier:
    """Which creator made an image: a small network trained on the dataset's works inside the job
    (it is never stored), seeded."""

    def __init__(self, works: Pixels, creators: npt.NDArray[np.int64], n_creators: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = nn.Sequential(nn.Linear(works.shape[1], CLASSIFIER_HIDDEN), nn.ReLU(),
                                         nn.Linear(CLASSIFIER_HIDDEN, max(n_creators, 2)))
        x = torch.from_numpy(np.ascontiguousarray(works, dtype=np.float32))
        y = torch.from_numpy(np.asarray(creators, dtype=np.int64))
        optimizer = torch.optim.Adam(self.network.parameters(), lr=3e-3)
        for _ in range(CLASSIFIER_EPOCHS if len(x) else 0):
            for batch in torch.randperm(len(x), generator=generator).split(128):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(self.network(x[batch]), y[batch]).backward()
                optimizer.step()
        self.network.eval()

    def attribute(self, images: Pixels) -> npt.NDArray[np.int64]:
        with torch.no_grad():
            logits = self.network(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
        return np.asarray(logits.argmax(dim=1).numpy(), dtype=np.int64)

    def attributed_to(self, images: Pixels, creators: Sequence[int]) -> Floats:
        """1 per image attributed to one of `creators`, else 0."""
        return np.isin(self.attribute(images), np.asarray(list(creators), dtype=np.int64)).astype(np.float64)


def style_check(after: Floats, references: Floats, policy: Policy) -> Check:
    """The share of the new version's samples attributed to an erased creator less the share of
    the samples of references that never saw them (one-sided)."""
    found = proportion_difference(after, references, interval_alpha(policy.alpha))
    return check("style", label="share of samples attributed to an erased creator − the references' share",
                 attack="creator_classifier", test="newcombe_wilson", estimate=None if found is None else found[0],
                 interval=None if found is None else found[1], alpha=policy.alpha, tolerance=policy.extraction,
                 two_sided=False, n=len(after), reference="references",
                 unavailable="needs reference models that never saw the erased creators",
                 attributed=int(after.sum()), reference_attributed=int(references.sum()),
                 reference_samples=len(references))


def loss_inputs(forget_target: Floats, forget_references: Floats, forget_out: npt.NDArray[np.bool_],
                null_target: Floats, null_references: Floats, null_out: npt.NDArray[np.bool_], reference: str,
                forget_subjects: npt.NDArray[np.object_] | None = None,
                null_subjects: npt.NDArray[np.object_] | None = None) -> MembershipInputs:
    """LiRA inputs from denoising losses ([n] under the new version, [n, K] under each reference
    or shard): the score is the negated loss, higher for a work the network saw."""
    inputs = MembershipInputs(-forget_target, -forget_references, forget_out, -null_target, -null_references,
                              null_out, reference)
    return replace(inputs, forget_subjects=forget_subjects, null_subjects=null_subjects)


@dataclass(frozen=True)
class ImageEvidence:
    """What an image model's verdicts are computed from."""

    forget_losses: Floats
    holdout_losses: Floats
    copies: CopyEvidence | None
    # 0/1 per sample attributed to an erased creator: the new version's, and its references'
    # (None without references that never saw the erased creators).
    style_after: Floats | None
    style_references: Floats | None
    membership: MembershipInputs | None = None


def calibrated_losses(inputs: MembershipInputs) -> tuple[Floats, Floats] | None:
    """Each work's denoising loss less its mean loss under the references (or shards) that never
    saw it, forget and held-out works; None where a forget work has no such reference.

    A creator's works may be unlike every other creator's (a style, a mark): a model that never
    saw them denoises them worse than held-out works, and the plain loss attack would read that as
    over-forgetting. Against models that never saw them either, the creator's own difficulty
    cancels, and what is left is what the model remembers (lower) or over-forgot (higher)."""
    forget_out = np.asarray(inputs.forget_out, dtype=bool)
    null_out = np.asarray(inputs.null_out, dtype=bool)
    if not forget_out.size or (forget_out.sum(axis=1) == 0).any() or (null_out.sum(axis=1) == 0).any():
        return None

    def calibrated(target: Floats, references: Floats, out: npt.NDArray[np.bool_]) -> Floats:
        # Scores are negated losses: loss − mean OUT loss = mean OUT score − score.
        mean_out = np.where(out, references, 0.0).sum(axis=1) / out.sum(axis=1)
        return np.asarray(mean_out - target, dtype=np.float64)

    return (calibrated(inputs.forget_target, inputs.forget_references, forget_out),
            calibrated(inputs.null_target, inputs.null_references, null_out))


def image_checks(evidence: ImageEvidence, policy: Policy, forget_ids: npt.NDArray[np.int64] | None = None) -> list[Check]:
    calibrated = calibrated_losses(evidence.membership) if evidence.membership is not None else None
    if calibrated is not None and evidence.membership is not None:
        plain = mia_auc_check(*calibrated, policy)
        checks = [replace(plain, reference=evidence.membership.reference, extra={**plain.extra, "calibrated": True})]
    else:
        checks = [mia_auc_check(evidence.forget_losses, evidence.holdout_losses, policy)]
    if evidence.membership is not None:
        checks.append(membership_check(evidence.membership, policy, forget_ids))
    empty = np.zeros(0)
    checks.append(copies_check(evidence.copies or CopyEvidence(empty, empty, 0, 0), policy))
    checks.append(style_check(evidence.style_after if evidence.style_after is not None else empty,
                              evidence.style_references if evidence.style_references is not None else empty, policy))
    return checks


def image_verification_block(evidence: ImageEvidence, *, forget_ids: npt.NDArray[np.int64], method: str, exact: bool,
                             live: int = 0, pool_expected: int = 0, reference_ids: Sequence[str] = (),
                             policy: Policy | None = None) -> dict[str, JsonValue]:
    """The block of `checks.verification_block` for an image model."""
    policy = policy or policy_from_settings()
    checks = image_checks(evidence, policy, forget_ids)
    membership = evidence.membership
    return block(checks, policy, method=method, exact=exact, records=len(forget_ids),
                 reference=membership.reference if membership is not None else "holdout",
                 tested=membership is not None, live=live, pool_expected=pool_expected, reference_ids=reference_ids,
                 tolerances={"mia_auc": policy.mia_auc, "audit": policy.membership, "copies": policy.extraction,
                             "style": policy.extraction})
