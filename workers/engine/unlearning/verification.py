"""Does a new model version still remember the forget records? Figures, thresholds, and the
unlearning job's verification of a method's outcome (`verify_outcome`, `check_outcome`).

All of verification lives here: a family-specific figure or a statistical verdict plugs into
`verify_outcome` (what is measured) and `check_outcome` (what passes).

Every figure is computed the same way for one network and for a SISA ensemble (a list of shard
networks, whose prediction is the mean of their probabilities), so a version's figures compare
with its predecessor's whatever method produced it.

The membership-inference attack is the loss threshold of Yeom et al. 2018: a record the model
trained on tends to have a lower loss than one it never saw. Its AUC between the forget records
and held-out records is 0.5 for a model that never saw the forget records, and rises the more
the model remembers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.artifacts.store import get_store
from app.config import get_settings
from app.unlearning.types import Figures, LineageProof, SampledReference, SetFigures, Shard, Verification
from workers.engine.partition import HOLDOUT
from workers.engine.records import Records, TextRecords
from workers.engine.serialization import load_network
from workers.engine.training import device_from_setting, ensemble_proba, evaluate, new_network, train_single
from workers.engine.unlearning.base import EXACT_METHODS
from workers.engine.unlearning.context import Context, Outcome, retain_sample

LabelledSet = tuple[torch.Tensor, torch.Tensor]
Networks = nn.Module | Sequence[nn.Module]


def _as_list(networks: Networks) -> list[nn.Module]:
    return [networks] if isinstance(networks, nn.Module) else list(networks)


def accuracy_and_loss(
    family: Any, networks: Networks, x: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    """{"accuracy", "loss", "n"} of the (ensemble) probabilities; None figures when n = 0."""
    return evaluate(family, _as_list(networks), x, y)


def per_example_losses(
    family: Any, networks: Networks, x: torch.Tensor, y: torch.Tensor
) -> npt.NDArray[np.float64]:
    """Cross-entropy of the (ensemble) probability of each record's label, as float64."""
    if y.shape[0] == 0:
        return np.zeros(0)
    proba = ensemble_proba(family, _as_list(networks), x)
    picked = proba.gather(1, y.to(proba.device).view(-1, 1)).squeeze(1).double()
    return (-torch.log(picked.clamp_min(1e-12))).cpu().numpy()


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_of = np.repeat(np.arange(len(starts)), ends - starts)
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[run_of]
    return ranks


def mia_auc(member_losses: Any, nonmember_losses: Any) -> float | None:
    """P(a random member scores higher than a random non-member), score = −loss, ties half.

    The Mann-Whitney U statistic from ranks; None when either side is empty.
    """
    members = np.asarray(member_losses, dtype=np.float64).reshape(-1)
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64).reshape(-1)
    if members.size == 0 or nonmembers.size == 0:
        return None
    if np.isnan(members).any() or np.isnan(nonmembers).any():
        raise ValueError("membership-inference losses contain NaN")
    ranks = _average_ranks(np.concatenate([-members, -nonmembers]))
    member_rank_sum = ranks[: members.size].sum()
    u = member_rank_sum - members.size * (members.size + 1) / 2.0
    return float(u / (members.size * nonmembers.size))


def verify(
    family: Any,
    networks: Networks,
    forget: LabelledSet,
    retain_sample: LabelledSet,
    holdout: LabelledSet | None,
) -> dict[str, Any]:
    """Accuracy and loss on the forget, retain and held-out sets, and the forget-vs-holdout
    membership AUC. Without a holdout set its figures and the AUC are None."""
    networks = _as_list(networks)
    figures: dict[str, Any] = {
        "forget": accuracy_and_loss(family, networks, *forget),
        "retain": accuracy_and_loss(family, networks, *retain_sample),
    }
    if holdout is None:
        figures["holdout"] = {"accuracy": None, "loss": None, "n": 0}
        figures["mia_auc"] = None
        return figures
    figures["holdout"] = accuracy_and_loss(family, networks, *holdout)
    figures["mia_auc"] = mia_auc(
        per_example_losses(family, networks, *forget),
        per_example_losses(family, networks, *holdout),
    )
    return figures


@dataclass(frozen=True)
class Thresholds:
    # Largest |forget accuracy − holdout accuracy|, as a fraction (0.03 = 3 points). A model
    # that forgot generalises to the forget records like to unseen ones, no better, no worse.
    max_forget_holdout_gap: float = 0.03
    # Largest forget-vs-holdout membership AUC; 0.5 means the attack is reduced to guessing.
    max_mia_auc: float = 0.55
    # Smallest such AUC, or None for no lower bound. Far below 0.5 the forget records stand out
    # by a loss higher than unseen records', which leaks membership just as well.
    min_mia_auc: float | None = None
    # Largest drop of holdout accuracy against the model before unlearning (0.01 = 1 point).
    max_holdout_drop: float = 0.01


@dataclass
class ThresholdResult:
    failed: list[str] = field(default_factory=list)
    # Checks that could not run (no holdout set, an empty forget set…). They are not passes:
    # an approximate result that cannot be checked is not verified.
    not_applicable: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return not self.failed and not self.not_applicable

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verified": self.verified}


def _accuracy(figures: Mapping[str, Any], part: str) -> float | None:
    value = (figures.get(part) or {}).get("accuracy")
    return None if value is None else float(value)


def check_thresholds(
    after: Mapping[str, Any], before: Mapping[str, Any] | None, thresholds: Thresholds | None = None
) -> ThresholdResult:
    """Compare `verify` figures after unlearning (and before, for the utility drop) with the
    thresholds; each failed or unchecked test is described in a readable sentence."""
    thresholds = thresholds or Thresholds()
    result = ThresholdResult()
    forget_accuracy = _accuracy(after, "forget")
    holdout_accuracy = _accuracy(after, "holdout")

    if forget_accuracy is None or holdout_accuracy is None:
        result.not_applicable.append(
            "forget/holdout accuracy gap: needs both a forget and a holdout set"
        )
    else:
        gap = forget_accuracy - holdout_accuracy
        if abs(gap) > thresholds.max_forget_holdout_gap:
            result.failed.append(
                f"forget accuracy {forget_accuracy:.3f} is {abs(gap) * 100:.1f} points "
                f"{'above' if gap > 0 else 'below'} holdout accuracy {holdout_accuracy:.3f} "
                f"(allowed: {thresholds.max_forget_holdout_gap * 100:.1f})"
            )

    auc = after.get("mia_auc")
    if auc is None:
        result.not_applicable.append("membership-inference AUC: needs a forget and a holdout set")
    else:
        if auc > thresholds.max_mia_auc:
            result.failed.append(
                f"membership-inference AUC {auc:.3f} is above {thresholds.max_mia_auc:.3f}: "
                f"the forget records are still recognisable as training data"
            )
        if thresholds.min_mia_auc is not None and auc < thresholds.min_mia_auc:
            result.failed.append(
                f"membership-inference AUC {auc:.3f} is below {thresholds.min_mia_auc:.3f}: "
                f"the forget records stand out by their unusually high loss"
            )

    previous = _accuracy(before or {}, "holdout")
    if previous is None or holdout_accuracy is None:
        result.not_applicable.append(
            "holdout accuracy drop: needs holdout figures before and after unlearning"
        )
    else:
        drop = previous - holdout_accuracy
        if drop > thresholds.max_holdout_drop:
            result.failed.append(
                f"holdout accuracy fell {drop * 100:.1f} points, from {previous:.3f} to "
                f"{holdout_accuracy:.3f} (allowed: {thresholds.max_holdout_drop * 100:.1f})"
            )
    return result


# The unlearning job's verification of a method's outcome.


def _figures(raw: Mapping[str, Any]) -> Figures:
    def part(name: str) -> SetFigures:
        return SetFigures(accuracy=raw[name]["accuracy"], loss=raw[name]["loss"], n=int(raw[name]["n"]))

    return Figures(forget=part("forget"), retain=part("retain"), holdout=part("holdout"), mia_auc=raw["mia_auc"])


# Language models: held-out records whose verbatim extraction is tried at most (greedy decoding
# of 20 bytes each is the costly part of text verification).
EXTRACTION_HOLDOUT_SAMPLE = 200


def membership_aucs(networks: Sequence[nn.Module], forget: tuple[torch.Tensor, npt.NDArray[np.int64]],
                    holdout: tuple[torch.Tensor, npt.NDArray[np.int64]]) -> dict[str, Any]:
    """Language models: loss and Min-K%++ membership AUCs of forget vs holdout records, from
    their windows and each window's record id, and the mean token losses."""
    from workers.engine.text_verification import token_statistics

    _, forget_loss, forget_min_k = token_statistics(networks, *forget)
    _, holdout_loss, holdout_min_k = token_statistics(networks, *holdout)
    return {
        "loss_auc": mia_auc(forget_loss, holdout_loss),
        # A higher Min-K%++ score means member; mia_auc ranks lower values as members.
        "min_k_plus_plus_auc": mia_auc(-forget_min_k, -holdout_min_k),
        "forget_loss": float(forget_loss.mean()) if len(forget_loss) else None,
        "holdout_loss": float(holdout_loss.mean()) if len(holdout_loss) else None,
        "forget_records": int(len(forget_loss)), "holdout_records": int(len(holdout_loss)),
    }


def text_figures(ctx: Context, networks: Sequence[nn.Module], forget_ids: npt.NDArray[np.int64],
                 retain_ids: npt.NDArray[np.int64], holdout_ids: npt.NDArray[np.int64] | None) -> Figures:
    """A language model's figures: next-token accuracy and mean token loss per set, and under
    `text` the perplexities, the membership AUCs and verbatim extraction of forget (and held-out)
    records. `mia_auc` is the loss AUC, as for the other families."""
    from workers.engine.text_verification import verbatim_extraction

    block_size = int(ctx.config.block_size)  # type: ignore[attr-defined]

    def measured(records: Records, ids: npt.NDArray[np.int64]) -> tuple[dict[str, Any], torch.Tensor, npt.NDArray[np.int64]]:
        windows, owners = records.rows_for(ids)
        return evaluate(ctx.family, list(networks), windows, owners), windows, owners.numpy()

    def texts(records: Records, ids: npt.NDArray[np.int64]) -> list[str]:
        if not isinstance(records, TextRecords):
            raise TypeError("a language model's records are texts")
        return records.texts_for(ids)

    forget, forget_windows, forget_owners = measured(ctx.old_records, forget_ids)
    retain = measured(ctx.old_records, retain_ids)[0]
    text: dict[str, Any] = {"extraction": {"forget": verbatim_extraction(networks, texts(ctx.old_records, forget_ids), block_size)}}
    holdout_set, auc = SetFigures(None, None, 0), None
    if holdout_ids is not None:
        holdout, holdout_windows, holdout_owners = measured(ctx.new_records, holdout_ids)
        membership = membership_aucs(networks, (forget_windows, forget_owners), (holdout_windows, holdout_owners))
        sample = np.sort(np.random.default_rng(ctx.seed).permutation(holdout_ids)[:EXTRACTION_HOLDOUT_SAMPLE])
        text["extraction"]["holdout"] = verbatim_extraction(networks, texts(ctx.new_records, sample), block_size)
        text |= {"loss_auc": membership["loss_auc"], "min_k_plus_plus_auc": membership["min_k_plus_plus_auc"]}
        holdout_set, auc = SetFigures(holdout["accuracy"], holdout["loss"], holdout["n"]), membership["loss_auc"]
        text["perplexity"] = {"forget": forget["perplexity"], "retain": retain["perplexity"], "holdout": holdout["perplexity"]}
    else:
        text["perplexity"] = {"forget": forget["perplexity"], "retain": retain["perplexity"], "holdout": None}
    return Figures(forget=SetFigures(forget["accuracy"], forget["loss"], forget["n"]),
                   retain=SetFigures(retain["accuracy"], retain["loss"], retain["n"]),
                   holdout=holdout_set, mia_auc=auc, text=text)


def check_text(figures: Verification, thresholds: Thresholds) -> list[str]:
    """Failed checks of an approximate result for a language model: both membership AUCs at
    most OBLIVIATE_MAX_MIA_AUC, no more forget records extracted verbatim (as a fraction) than
    held-out ones, and held-out next-token accuracy down at most OBLIVIATE_MAX_HOLDOUT_DROP."""
    after = figures.after
    # Written by `text_figures` just above, so its shape is known.
    text = cast("Mapping[str, Any]", after.text or {})
    failed = []
    for name, label in (("loss_auc", "loss"), ("min_k_plus_plus_auc", "Min-K%++")):
        auc = text.get(name)
        if auc is None:
            failed.append(f"{label} membership AUC: needs a forget and a holdout set")
        elif auc > thresholds.max_mia_auc:
            failed.append(f"{label} membership AUC {auc:.3f} is above {thresholds.max_mia_auc:.3f}: "
                          "the forget records are still recognisable as training data")
    extraction = text.get("extraction") or {}
    forget, holdout = extraction.get("forget") or {}, extraction.get("holdout") or {}
    if (forget.get("fraction") or 0) > (holdout.get("fraction") or 0):
        failed.append(f"{forget['extracted']} of {forget['records']} forget records still come back verbatim "
                      f"(held-out records: {holdout.get('extracted', 0)} of {holdout.get('records', 0)})")
    previous, now = figures.before.holdout.accuracy, after.holdout.accuracy
    if previous is not None and now is not None and previous - now > thresholds.max_holdout_drop:
        failed.append(f"held-out next-token accuracy fell {(previous - now) * 100:.1f} points, from {previous:.3f} "
                      f"to {now:.3f} (allowed: {thresholds.max_holdout_drop * 100:.1f})")
    return failed


def verify_outcome(ctx: Context, outcome: Outcome, before_shards: Sequence[Shard]) -> Verification:
    """Figures before and after on the forget records, a retain sample and the holdout, plus the
    lineage proof (no forget record in the new manifest)."""
    store = get_store()
    forget = ctx.old_records.rows_for(np.sort(ctx.forget_ids))
    retain = ctx.old_records.rows_for(retain_sample(ctx, limit=5000))
    holdout_ids = np.sort(outcome.manifest.record_ids[outcome.manifest.shards == HOLDOUT])
    holdout_ids = holdout_ids[np.isin(holdout_ids, ctx.new_records.record_ids)]
    holdout = ctx.new_records.rows_for(holdout_ids) if len(holdout_ids) else None

    def networks(shards: Sequence[Shard]) -> list[nn.Module]:
        return [load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(s.weights)) for s in shards]

    if ctx.spec.data_kind == "text":
        forget_ids, retain_ids = np.sort(ctx.forget_ids), retain_sample(ctx, limit=5000)
        held = holdout_ids if len(holdout_ids) else None
        before = text_figures(ctx, networks(before_shards), forget_ids, retain_ids, held)
        after = text_figures(ctx, networks(outcome.shards), forget_ids, retain_ids, held)
    else:
        before = _figures(verify(ctx.family, networks(before_shards), forget, retain, holdout))
        after = _figures(verify(ctx.family, networks(outcome.shards), forget, retain, holdout))
    trained_after = outcome.manifest.trained_ids()
    reference = None
    if holdout is None and outcome.method not in EXACT_METHODS:
        reference = sampled_reference(ctx, forget)
    return Verification(
        before=before, after=after,
        lineage_proof=LineageProof(forget_records=int(len(ctx.forget_ids)),
                                   in_new_manifest=int(np.isin(ctx.forget_ids, trained_after).sum())),
        holdout_available=holdout is not None, reference=reference,
    )


def check_outcome(outcome: Outcome, figures: Verification) -> list[str]:
    """Failed checks of an approximate result (empty = verified)."""
    settings = get_settings()
    thresholds = Thresholds(
        max_forget_holdout_gap=settings.max_forget_holdout_gap, max_mia_auc=settings.max_mia_auc,
        max_holdout_drop=settings.max_holdout_drop,
    )
    if not figures.holdout_available:
        reference = figures.reference
        gap = abs((figures.after.forget.accuracy or 0) - ((reference.forget_accuracy if reference else None) or 0))
        return [] if gap <= thresholds.max_forget_holdout_gap else [
            f"no holdout: forget accuracy differs from a sampled retrain reference by {gap * 100:.1f} points"
        ]
    if figures.after.text is not None:
        return check_text(figures, thresholds)
    result = check_thresholds(figures.after.to_json(), figures.before.to_json(), thresholds)
    failed = list(result.failed) + list(result.not_applicable)
    if outcome.method == "certified_newton":
        spent, budget = outcome.state.get("residual_spent", 0.0), outcome.state.get("budget", 0.0)
        if not isinstance(spent, (int, float)) or not isinstance(budget, (int, float)):
            raise TypeError(f"certified removal state is not numeric: {spent!r}, {budget!r}")
        if spent > budget:
            failed.append(f"certified removal budget exhausted ({spent:.4g} > {budget:.4g})")
    return failed


def sampled_reference(ctx: Context, forget: tuple[torch.Tensor, torch.Tensor]) -> SampledReference:
    """Without a holdout, an approximate result is compared with a network retrained on a sample
    of the retained records: the forget records should look as unfamiliar to both."""
    ids = retain_sample(ctx, limit=5000)
    features, labels = ctx.old_records.rows_for(ids)
    state = train_single(ctx.family, ctx.config, ctx.shape, features, labels, seed=ctx.seed, device=device_from_setting("cpu"))
    network = new_network(ctx.family, ctx.config, ctx.shape, ctx.seed)
    network.load_state_dict(state)
    figures = evaluate(ctx.family, network, *forget)
    return SampledReference(forget_accuracy=figures["accuracy"], forget_loss=figures["loss"], retain_sample=int(len(ids)))
