"""Does a new model version still remember the forget records? Figures, and the unlearning job's
verification of a method's outcome (`verify_outcome`, `check_outcome`).

Verification enters here: a family-specific figure or a statistical check plugs into
`verify_outcome` (what is measured) and `check_outcome` (what passes); the checks' statistics are
`workers/engine/forgetting.py` and `verdicts.py`, the per-record audit `audit.py`.

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
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.artifacts.store import get_store
from app.unlearning.types import EXACT, Figures, LineageProof, SetFigures, Shard, Verification
from workers.engine import forgetting, references
from workers.engine.partition import HOLDOUT
from workers.engine.records import Records, TextRecords
from workers.engine.serialization import load_network
from workers.engine.training import ensemble_proba, evaluate
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


def check_text(figures: Verification, policy: forgetting.Policy) -> list[str]:
    """Failed checks of an approximate result for a language model: both membership AUCs within
    the AUC tolerance of 0.5 on either side (a forget set far less familiar than unseen text gives
    its members away too), no more forget records extracted verbatim (as a fraction) than held-out
    ones, and held-out next-token accuracy down at most the holdout-drop tolerance."""
    after = figures.after
    # Written by `text_figures` just above, so its shape is known.
    text = cast("Mapping[str, Any]", after.text or {})
    failed = []
    for name, label in (("loss_auc", "loss"), ("min_k_plus_plus_auc", "Min-K%++")):
        auc = text.get(name)
        if auc is None:
            failed.append(f"{label} membership AUC: needs a forget and a holdout set")
        elif abs(auc - 0.5) > policy.mia_auc:
            side = "the forget records are still recognisable as training data" if auc > 0.5 else (
                "the forget records stand out as less familiar than unseen text")
            failed.append(f"{label} membership AUC {auc:.3f} is more than {policy.mia_auc:.3f} from 0.5: {side}")
    extraction = text.get("extraction") or {}
    forget, holdout = extraction.get("forget") or {}, extraction.get("holdout") or {}
    if (forget.get("fraction") or 0) > (holdout.get("fraction") or 0):
        failed.append(f"{forget['extracted']} of {forget['records']} forget records still come back verbatim "
                      f"(held-out records: {holdout.get('extracted', 0)} of {holdout.get('records', 0)})")
    previous, now = figures.before.holdout.accuracy, after.holdout.accuracy
    if previous is not None and now is not None and previous - now > policy.holdout_drop:
        failed.append(f"held-out next-token accuracy fell {(previous - now) * 100:.1f} points, from {previous:.3f} "
                      f"to {now:.3f} (allowed: {policy.holdout_drop * 100:.1f})")
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

    before_networks, after_networks = networks(before_shards), networks(outcome.shards)
    text = ctx.spec.data_kind == "text"
    if text:
        forget_ids, retain_ids = np.sort(ctx.forget_ids), retain_sample(ctx, limit=5000)
        held = holdout_ids if len(holdout_ids) else None
        before = text_figures(ctx, before_networks, forget_ids, retain_ids, held)
        after = text_figures(ctx, after_networks, forget_ids, retain_ids, held)
    else:
        before = _figures(verify(ctx.family, before_networks, forget, retain, holdout))
        after = _figures(verify(ctx.family, after_networks, forget, retain, holdout))
    trained_after = outcome.manifest.trained_ids()
    return Verification(
        before=before, after=after,
        lineage_proof=LineageProof(forget_records=len(ctx.forget_ids),
                                   in_new_manifest=int(np.isin(ctx.forget_ids, trained_after).sum())),
        holdout_available=holdout is not None,
        # A language model's checks are its text figures (check_text); the verdicts with
        # intervals are the tabular families'.
        verdicts=None if text else _verdicts(ctx, outcome, before_networks, after_networks, forget, holdout),
    )


def _verdicts(ctx: Context, outcome: Outcome, before: list[nn.Module], after: list[nn.Module],
              forget: LabelledSet, holdout: LabelledSet | None) -> dict[str, Any]:
    """The statistical verdicts (workers/engine/forgetting.py) against the holdout and, per
    record, the model's reference models or, for a SISA model, its own shards."""
    forget_ids = np.sort(ctx.forget_ids)
    keys = ctx.old_records.subject_keys[np.searchsorted(ctx.old_records.record_ids, forget_ids)].tolist()
    shards = None
    if ctx.sisa is not None:
        shards = ctx.old_manifest.shards[np.searchsorted(ctx.old_manifest.record_ids, forget_ids)]
    return forgetting.verification_block(
        ctx.family, before=before, after=after, forget=forget, holdout=holdout, forget_ids=forget_ids,
        method=outcome.method, exact=outcome.method in EXACT,
        references=references.networks(ctx.references, ctx.family, ctx.config, ctx.shape),
        forget_out=references.out_mask(ctx.references, keys), reference_ids=[str(r.id) for r in ctx.references],
        pool_expected=ctx.reference_pool, forget_shards=shards,
    )


def check_outcome(outcome: Outcome, figures: Verification) -> list[str]:
    """Why an approximate result is not verified (empty = verified): every check whose verdict is
    not `pass` (an inconclusive one included), a language model's text checks, and an exhausted
    certified-removal budget."""
    if figures.after.text is not None:
        failed = check_text(figures, forgetting.policy_from_settings())
    else:
        verdicts = figures.verdicts or {}
        reasons = verdicts.get("reasons")
        failed = []
        if verdicts.get("verdict") != "pass":
            failed = [str(r) for r in reasons] if isinstance(reasons, list) and reasons else ["no verdicts were computed"]
    if outcome.method == "certified_newton":
        spent, budget = outcome.state.get("residual_spent", 0.0), outcome.state.get("budget", 0.0)
        if not isinstance(spent, (int, float)) or not isinstance(budget, (int, float)):
            raise TypeError(f"certified removal state is not numeric: {spent!r}, {budget!r}")
        if spent > budget:
            failed.append(f"certified removal budget exhausted ({spent:.4g} > {budget:.4g})")
    return failed
