"""Does a new model version still remember the forget records? Figures, and the unlearning job's
verification of a method's outcome (`verify_outcome`, `check_outcome`).

Verification enters here: a family-specific figure or a statistical check plugs into
`verify_outcome` (what is measured) and `check_outcome` (what passes); the checks' statistics are
`workers/engine/verification/checks.py` (language models: `text_checks.py`) and `verdicts.py`,
the per-record LiRA test `lira.py`.

Every figure is computed the same way for one network and for a SISA ensemble (a list of shard
networks, whose prediction is the mean of their probabilities), so a version's figures compare
with its predecessor's whatever method produced it.

The membership-inference attack is the loss threshold of Yeom et al. 2018: a record the model
trained on tends to have a lower loss than one it never saw. Its AUC between the forget records
and held-out records is 0.5 for a model that never saw the forget records, and rises the more
the model remembers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.artifacts.store import get_store
from app.unlearning.types import EXACT, Figures, LineageProof, SetFigures, Shard, Verification
from workers.engine.verification import checks, image_checks, references, text_checks
from workers.engine.verification import control as no_op
from workers.engine.verification.intervals import connected_clusters
from workers.engine.partition import HOLDOUT
from workers.engine.records import Records, TextRecords
from workers.engine.serialization import load_network
from workers.engine.training import ensemble_proba, evaluate, frozen_network
from workers.engine.unlearning import base
from workers.engine.unlearning.context import CandidateVersion, Context, halves, holdout_half, retain_sample
from workers.engine.verification.scores import LabelledSet, Networks, as_list, reference_inputs, shard_inputs
from workers.engine.verification.text_checks import (
    TextSubjects,
    TokenStatistics,
    extractable,
    extraction_counts,
    extraction_outcomes,
    token_statistics,
)


def accuracy_and_loss(
    family: Any, networks: Networks, x: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    """{"accuracy", "loss", "n"} of the (ensemble) probabilities; None figures when n = 0."""
    return evaluate(family, as_list(networks), x, y)


def per_example_losses(
    family: Any, networks: Networks, x: torch.Tensor, y: torch.Tensor
) -> npt.NDArray[np.float64]:
    """Cross-entropy of the (ensemble) probability of each record's label, as float64."""
    if y.shape[0] == 0:
        return np.zeros(0)
    proba = ensemble_proba(family, as_list(networks), x)
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
    networks = as_list(networks)
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


# Retained records the figures before and after are measured on, at most: the retain figures
# judge nothing (no check reads them; holdout_drop is the utility check), and 2,000 records put
# a retained accuracy within about ±1.3 points (95 %). At 5,000, the forward passes of every
# SISA shard over them were the largest part of an exact erasure's verification.
VERIFICATION_RETAIN_SAMPLE = 2000

# Language models: held-out records whose verbatim extraction is tried at most (greedy decoding
# of 20 bytes each is the costly part of text verification).
EXTRACTION_HOLDOUT_SAMPLE = 200


def membership_aucs(networks: Sequence[nn.Module], forget: tuple[torch.Tensor, npt.NDArray[np.int64]],
                    holdout: tuple[torch.Tensor, npt.NDArray[np.int64]]) -> dict[str, Any]:
    """Language models: loss and Min-K%++ membership AUCs of forget vs holdout records, from
    their windows and each window's record id, and the mean token losses."""
    return _membership(token_statistics(networks, *forget), token_statistics(networks, *holdout))


def _membership(forget: TokenStatistics, holdout: TokenStatistics) -> dict[str, Any]:
    return {
        "loss_auc": mia_auc(forget.loss, holdout.loss),
        # A higher Min-K%++ score means member; mia_auc ranks lower values as members.
        "min_k_plus_plus_auc": mia_auc(-forget.min_k, -holdout.min_k),
        "forget_loss": float(forget.loss.mean()) if len(forget.loss) else None,
        "holdout_loss": float(holdout.loss.mean()) if len(holdout.loss) else None,
        "forget_records": int(len(forget.loss)), "holdout_records": int(len(holdout.loss)),
    }


NO_RECORDS = TokenStatistics(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class TextEvidence:
    """The per-record figures behind a language model's verdicts (workers/engine/verification/text_checks.py):
    token statistics of the forget and held-out records, and which of them came back verbatim
    (the held-out ones of the extraction sample), with the subject key of each outcome."""

    forget: TokenStatistics
    holdout: TokenStatistics | None
    forget_extracted: npt.NDArray[np.float64]
    holdout_extracted: npt.NDArray[np.float64]
    forget_extracted_subjects: npt.NDArray[np.object_]
    holdout_extracted_subjects: npt.NDArray[np.object_]


def text_figures(ctx: Context, networks: Sequence[nn.Module], forget_ids: npt.NDArray[np.int64],
                 retain_ids: npt.NDArray[np.int64],
                 holdout_ids: npt.NDArray[np.int64] | None) -> tuple[Figures, TextEvidence]:
    """A language model's figures: next-token accuracy and mean token loss per set, and under
    `text` the perplexities, the membership AUCs and verbatim extraction of forget (and held-out)
    records. `mia_auc` is the loss AUC, as for the other families. With them, the per-record
    evidence they were counted from."""
    block_size = int(ctx.config.block_size)  # type: ignore[attr-defined]

    def measured(records: Records, ids: npt.NDArray[np.int64]) -> tuple[dict[str, Any], TokenStatistics]:
        windows, owners = records.rows_for(ids)
        return evaluate(ctx.family, list(networks), windows, owners), token_statistics(networks, windows, owners.numpy())

    def extracted(records: Records, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64],
                                                                          npt.NDArray[np.object_]]:
        """Each tried text's outcome and its subject key (texts too short to split are not tried)."""
        if not isinstance(records, TextRecords):
            raise TypeError("a language model's records are texts")
        texts = records.texts_for(ids)
        tried = np.asarray(ids)[extractable(texts)]
        return (extraction_outcomes(networks, texts, block_size),
                np.asarray(records.subject_keys[np.searchsorted(records.record_ids, tried)], dtype=object))

    forget, forget_statistics = measured(ctx.old_records, forget_ids)
    retain = evaluate(ctx.family, list(networks), *ctx.old_records.rows_for(retain_ids))
    forget_extracted, forget_extracted_subjects = extracted(ctx.old_records, forget_ids)
    holdout_extracted, holdout_extracted_subjects = np.zeros(0), np.zeros(0, dtype=object)
    text: dict[str, Any] = {"extraction": {"forget": extraction_counts(forget_extracted)}}
    holdout_set, auc, holdout_statistics = SetFigures(None, None, 0), None, None
    if holdout_ids is not None:
        holdout, holdout_statistics = measured(ctx.new_records, holdout_ids)
        membership = _membership(forget_statistics, holdout_statistics)
        # Drawn from the confirmation half, as every other verdict's holdout is: the tuning half
        # steers stopping rules and targets, so its records are no independent yardstick.
        confirming = holdout_half(ctx, holdout_ids, confirmation=True)
        sample = np.sort(np.random.default_rng(ctx.seed).permutation(confirming)[:EXTRACTION_HOLDOUT_SAMPLE])
        holdout_extracted, holdout_extracted_subjects = extracted(ctx.new_records, sample)
        text["extraction"]["holdout"] = extraction_counts(holdout_extracted)
        text |= {"loss_auc": membership["loss_auc"], "min_k_plus_plus_auc": membership["min_k_plus_plus_auc"]}
        holdout_set, auc = SetFigures(holdout["accuracy"], holdout["loss"], holdout["n"]), membership["loss_auc"]
        text["perplexity"] = {"forget": forget["perplexity"], "retain": retain["perplexity"], "holdout": holdout["perplexity"]}
    else:
        text["perplexity"] = {"forget": forget["perplexity"], "retain": retain["perplexity"], "holdout": None}
    figures = Figures(forget=SetFigures(forget["accuracy"], forget["loss"], forget["n"]),
                      retain=SetFigures(retain["accuracy"], retain["loss"], retain["n"]),
                      holdout=holdout_set, mia_auc=auc, text=text)
    return figures, TextEvidence(forget_statistics, holdout_statistics, forget_extracted, holdout_extracted,
                                 forget_extracted_subjects, holdout_extracted_subjects)


def verify_outcome(ctx: Context, outcome: CandidateVersion, before_shards: Sequence[Shard],
                   alpha: float | None = None) -> Verification:
    """Figures before and after on the forget records, a retain sample and the holdout, plus the
    lineage proof (no forget record in the new manifest). The verdicts use the confirmation half
    of the references and of the holdout (`context.halves`, `context.holdout_half`), at level
    `alpha` where given (a look of several, `job.verified`), else the setting's."""
    store = get_store()
    forget = ctx.old_records.rows_for(np.sort(ctx.forget_ids))
    retain = ctx.old_records.rows_for(retain_sample(ctx, limit=VERIFICATION_RETAIN_SAMPLE))
    holdout_ids = np.sort(outcome.manifest.record_ids[outcome.manifest.shards == HOLDOUT])
    holdout_ids = holdout_ids[np.isin(holdout_ids, ctx.new_records.record_ids)]
    holdout = ctx.new_records.rows_for(holdout_ids) if len(holdout_ids) else None

    def networks(shards: Sequence[Shard]) -> list[nn.Module]:
        # Shared by weights hash within the job's `frozen_predictions` scope (tabular models: the
        # original's and unchanged SISA shards' forward passes run once); nothing here trains them.
        if ctx.spec.data_kind != "tabular":
            return [load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(s.weights)) for s in shards]
        def loader(weights: str) -> Callable[[], nn.Module]:
            return lambda: load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(weights))

        return [frozen_network(s.weights, loader(s.weights)) for s in shards]

    before_networks, after_networks = networks(before_shards), networks(outcome.shards)
    if ctx.spec.data_kind == "text":
        forget_ids, retain_ids = np.sort(ctx.forget_ids), retain_sample(ctx, limit=VERIFICATION_RETAIN_SAMPLE)
        held = holdout_ids if len(holdout_ids) else None
        before, before_evidence = text_figures(ctx, before_networks, forget_ids, retain_ids, held)
        after, after_evidence = text_figures(ctx, after_networks, forget_ids, retain_ids, held)
        verdicts = _text_verdicts(ctx, outcome, after_networks, after_evidence, before_evidence.holdout or NO_RECORDS,
                                  held, alpha)
    elif ctx.spec.data_kind == "image":
        before = image_figures(before_networks, forget, retain, holdout)
        after = image_figures(after_networks, forget, retain, holdout)
        verdicts = _image_verdicts(ctx, outcome, after_networks, forget, holdout, holdout_ids)
    else:
        before = _figures(verify(ctx.family, before_networks, forget, retain, holdout))
        # The same weights on the same records give the same figures (the no-op control measures
        # the original as its own result): measured once.
        same = [s.weights for s in outcome.shards] == [s.weights for s in before_shards]
        after = before if same else _figures(verify(ctx.family, after_networks, forget, retain, holdout))
        verdicts = _verdicts(ctx, outcome, before_networks, after_networks, forget, holdout_ids, alpha)
    trained_after = outcome.manifest.trained_ids()
    return Verification(
        before=before, after=after,
        lineage_proof=LineageProof(forget_records=len(ctx.forget_ids),
                                   in_new_manifest=int(np.isin(ctx.forget_ids, trained_after).sum())),
        holdout_available=holdout is not None, verdicts=verdicts,
    )


def _verdicts(ctx: Context, outcome: CandidateVersion, before: list[nn.Module], after: list[nn.Module],
              forget: LabelledSet, holdout_ids: npt.NDArray[np.int64], alpha: float | None) -> dict[str, Any]:
    """The statistical verdicts (workers/engine/verification/checks.py) against the confirmation
    half of the holdout and, per record, the confirmation half of the model's reference models
    or, for a SISA model, its own shards."""
    forget_ids = np.sort(ctx.forget_ids)
    keys, shards = _subjects_and_shards(ctx, forget_ids)
    holdout_ids = holdout_half(ctx, holdout_ids, confirmation=True)
    holdout = ctx.new_records.rows_for(holdout_ids) if len(holdout_ids) else None
    pool = halves(ctx)
    return checks.verification_block(
        ctx.family, before=before, after=after, forget=forget, holdout=holdout, forget_ids=forget_ids,
        method=outcome.method, exact=outcome.method in EXACT,
        references=references.networks(pool.confirmation, ctx.family, ctx.config, ctx.shape),
        forget_out=references.out_mask(pool.confirmation, keys),
        reference_ids=[str(r.id) for r in pool.confirmation],
        pool_expected=pool.confirmation_expected if ctx.reference_pool else 0, forget_shards=shards,
        subjects=(forget_clusters(ctx, forget_ids, keys),
                  ctx.new_records.subject_keys[np.searchsorted(ctx.new_records.record_ids, holdout_ids)]),
        requests=request_masks(ctx, keys), alpha=alpha, independent=pool.independent,
        clustered_by_source=ctx.forget_sources is not None,
    )


def forget_clusters(ctx: Context, forget_ids: npt.NDArray[np.int64], keys: list[str]) -> npt.NDArray[Any]:
    """The unit of every interval over the forget records: the subject, or for a remediated slice
    of a dataset with a declared source column, the connected components of records sharing a
    subject or a source (docs/remediation.md)."""
    if ctx.forget_sources is None:
        return np.asarray(keys, dtype=object)
    sources = np.asarray([ctx.forget_sources.get(int(i)) for i in forget_ids.tolist()], dtype=object)
    return connected_clusters(keys, sources, size=len(keys))


def image_figures(networks: Sequence[nn.Module], forget: LabelledSet, retain: LabelledSet,
                  holdout: LabelledSet | None) -> Figures:
    """An image model's figures: the mean fixed-timestep denoising loss of the forget, retain and
    held-out works (accuracy has no meaning: None), and the loss attack's AUC as `mia_auc`."""
    forget_losses = denoising_losses(networks, forget)
    retain_losses = denoising_losses(networks, retain)
    holdout_losses = denoising_losses(networks, holdout) if holdout is not None else np.zeros(0)

    def part(losses: npt.NDArray[np.float64]) -> SetFigures:
        return SetFigures(accuracy=None, loss=float(losses.mean()) if len(losses) else None, n=len(losses))

    return Figures(forget=part(forget_losses), retain=part(retain_losses), holdout=part(holdout_losses),
                   mia_auc=mia_auc(forget_losses, holdout_losses) if holdout is not None else None)


def denoising_losses(networks: Sequence[nn.Module], rows: LabelledSet) -> npt.NDArray[np.float64]:
    """Each work's fixed-timestep denoising loss under the networks (their mean)."""
    from workers.engine.families.image_diffusion import ensemble_losses

    if int(rows[1].shape[0]) == 0:
        return np.zeros(0)
    return np.asarray(ensemble_losses(list(networks), *rows).double().numpy(), dtype=np.float64)


def _image_verdicts(ctx: Context, outcome: CandidateVersion, after: list[nn.Module], forget: LabelledSet,
                    holdout: LabelledSet | None, holdout_ids: npt.NDArray[np.int64]) -> dict[str, Any]:
    """An image model's verdicts (workers/engine/verification/image_checks.py): the denoising-loss
    attack and, per creator, LiRA against the references or a SISA model's shards; copies of
    erased works among samples; the share of samples a creator classifier attributes to them."""
    from workers.engine.families.image_diffusion import sample
    from workers.engine.training import derive_seed

    forget_ids = np.sort(ctx.forget_ids)
    keys, forget_shards = _subjects_and_shards(ctx, forget_ids)
    forget_subjects = np.asarray(keys, dtype=object)
    holdout_subjects = ctx.new_records.subject_keys[np.searchsorted(ctx.new_records.record_ids, holdout_ids)]
    pool = references.networks(ctx.references, ctx.family, ctx.config, ctx.shape)
    forget_losses = denoising_losses(after, forget)
    holdout_losses = denoising_losses(after, holdout) if holdout is not None else np.zeros(0)

    def matrix(networks: Sequence[nn.Module], rows: LabelledSet) -> npt.NDArray[np.float64]:
        return np.column_stack([denoising_losses([n], rows) for n in networks])

    membership = None
    has_holdout = holdout is not None and len(holdout_losses) > 0
    if holdout is not None and has_holdout and forget_shards is not None and len(after) > 1:
        found = shard_inputs(-matrix(after, forget), -matrix(after, holdout), forget_shards)
        membership = replace(found, forget_subjects=forget_subjects, null_subjects=holdout_subjects)
    elif holdout is not None and has_holdout and pool:
        out = references.out_mask(ctx.references, keys)
        null_matrix = matrix(pool, holdout)
        membership = image_checks.loss_inputs(forget_losses, matrix(pool, forget), out, holdout_losses, null_matrix,
                                              np.ones(null_matrix.shape, dtype=bool), "references",
                                              forget_subjects, holdout_subjects)

    def pixels(networks: Sequence[nn.Module], purpose: str,
               shard_records: Sequence[int | None] | None = None) -> npt.NDArray[np.float32]:
        drawn = sample(networks, ctx.config, image_checks.SAMPLES, seed=derive_seed(ctx.seed, "verify", purpose),
                       shard_records=shard_records)
        return np.asarray(drawn.reshape(drawn.shape[0], -1).numpy(), dtype=np.float32)

    # The new version's samples as /sample draws them: a SISA version's shards by their records.
    samples = pixels(after, "copies", [shard.records for shard in outcome.shards])
    forget_works = forget[0].numpy()
    copies = None
    if holdout is not None and has_holdout:
        copies = image_checks.copy_evidence(samples, forget_works, holdout[0].numpy(), seed=ctx.seed)
    # The creator classifier, on every work of the dataset version the model trained on.
    creators, creator_index = np.unique(ctx.old_records.subject_keys.astype(str), return_inverse=True)
    classifier = image_checks.CreatorClassifier(ctx.old_records.features, creator_index.astype(np.int64),
                                                len(creators), seed=derive_seed(ctx.seed, "creator-classifier"))
    erased = np.flatnonzero(np.isin(creators, np.asarray(sorted(set(keys)), dtype=str))).tolist()
    style_after = classifier.attributed_to(samples, erased)
    unseen_by = [pool[k] for k in range(len(pool)) if references.out_mask(ctx.references, keys)[:, k].all()]
    style_references = None
    if unseen_by:
        style_references = np.concatenate([classifier.attributed_to(pixels([network], f"reference-{k}"), erased)
                                           for k, network in enumerate(unseen_by)])
    evidence = image_checks.ImageEvidence(forget_losses, holdout_losses, copies, style_after, style_references,
                                          membership)
    return image_checks.image_verification_block(
        evidence, forget_ids=forget_ids, method=outcome.method, exact=outcome.method in EXACT, live=len(pool),
        pool_expected=ctx.reference_pool, reference_ids=[str(r.id) for r in ctx.references])


def request_masks(ctx: Context, keys: list[str]) -> dict[str, npt.NDArray[np.bool_]] | None:
    """Per request of a batch, which forget records (with subject `keys`) are its subjects'; None
    for a job that serves one request."""
    if len(ctx.requests) < 2:
        return None
    found = np.asarray(keys, dtype=object)
    return {request_id: np.isin(found, np.asarray(own, dtype=object)) for request_id, own in ctx.requests}


def _subjects_and_shards(ctx: Context, forget_ids: npt.NDArray[np.int64]) -> tuple[list[str], npt.NDArray[np.int64] | None]:
    """The subject key of each forget record and, for a SISA model, the shard that held it."""
    keys = ctx.old_records.subject_keys[np.searchsorted(ctx.old_records.record_ids, forget_ids)].tolist()
    shards = None
    if ctx.sisa is not None:
        # A stored manifest comes back ordered by shard and slice, not by record id.
        ids = ctx.old_manifest.record_ids
        order = np.argsort(ids, kind="stable")
        shards = ctx.old_manifest.shards[order[np.searchsorted(ids, forget_ids, sorter=order)]]
    return keys, shards


def _text_verdicts(ctx: Context, outcome: CandidateVersion, after: list[nn.Module], evidence: TextEvidence,
                   before_holdout: TokenStatistics, holdout_ids: npt.NDArray[np.int64] | None,
                   alpha: float | None) -> dict[str, Any]:
    """A language model's verdicts (workers/engine/verification/text_checks.py): the text checks against
    the confirmation half of the holdout and, per record, LiRA against the confirmation half of
    the model's reference models or a SISA model's own shards, each record scored by its mean
    token log-likelihood. Every text carries its subject key, so each check judges subjects
    (`TextSubjects`). (Verbatim extraction's holdout sample is drawn from the confirmation half too.)"""
    forget_ids = np.sort(ctx.forget_ids)
    keys, forget_shards = _subjects_and_shards(ctx, forget_ids)
    holdout = evidence.holdout if evidence.holdout is not None else NO_RECORDS
    if holdout_ids is not None:
        holdout_ids = holdout_half(ctx, holdout_ids, confirmation=True)
        holdout, before_holdout = _only(holdout, holdout_ids), _only(before_holdout, holdout_ids)
    forget_rows = ctx.old_records.rows_for(forget_ids)
    holdout_rows = ctx.new_records.rows_for(holdout_ids) if holdout_ids is not None and len(holdout_ids) else None
    halved = halves(ctx)

    def matrices(networks: Sequence[nn.Module], rows: LabelledSet) -> tuple[npt.NDArray[np.float64],
                                                                            npt.NDArray[np.float64]]:
        """[n, K] scores and Min-K%++ scores of each record under each network."""
        found = [token_statistics([n], rows[0], rows[1].numpy()) for n in networks]
        return (np.column_stack([text_checks.score(s) for s in found]),
                np.column_stack([np.asarray(s.min_k, dtype=np.float64) for s in found]))

    inputs = min_k_inputs = None
    pool = references.networks(halved.confirmation, ctx.family, ctx.config, ctx.shape)
    if forget_shards is not None and len(after) > 1 and holdout_rows is not None:
        (forget_scores, forget_min_k), (null_scores, null_min_k) = matrices(after, forget_rows), matrices(after, holdout_rows)
        inputs = shard_inputs(forget_scores, null_scores, forget_shards)
        min_k_inputs = shard_inputs(forget_min_k, null_min_k, forget_shards)
    elif pool and holdout_rows is not None:
        (forget_scores, forget_min_k), (null_scores, null_min_k) = matrices(pool, forget_rows), matrices(pool, holdout_rows)
        out = references.out_mask(halved.confirmation, keys)
        inputs = reference_inputs(text_checks.score(evidence.forget), forget_scores, out, text_checks.score(holdout),
                                  null_scores)
        min_k_inputs = reference_inputs(np.asarray(evidence.forget.min_k, dtype=np.float64), forget_min_k, out,
                                        np.asarray(holdout.min_k, dtype=np.float64), null_min_k)
    return text_checks.text_verification_block(
        forget=evidence.forget, holdout=holdout, before_holdout=before_holdout,
        forget_extracted=evidence.forget_extracted, holdout_extracted=evidence.holdout_extracted,
        method=outcome.method, exact=outcome.method in EXACT, membership_inputs=inputs, live=len(pool),
        pool_expected=halved.confirmation_expected if ctx.reference_pool else 0,
        reference_ids=[str(r.id) for r in halved.confirmation], requests=request_masks(ctx, keys),
        min_k_inputs=min_k_inputs, policy=checks.policy_from_settings(alpha), independent=halved.independent,
        subjects=TextSubjects(_subject_keys(ctx.old_records, evidence.forget.records),
                              _subject_keys(ctx.new_records, holdout.records),
                              evidence.forget_extracted_subjects, evidence.holdout_extracted_subjects))


def _subject_keys(records: Records, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    """The subject key of each record among `ids` (pseudonymous, never an identifier)."""
    return np.asarray(records.subject_keys[np.searchsorted(records.record_ids, ids)], dtype=object)


def _only(statistics: TokenStatistics, ids: npt.NDArray[np.int64]) -> TokenStatistics:
    """The statistics of the records among `ids`."""
    keep = np.isin(statistics.records, ids)
    return TokenStatistics(np.asarray(statistics.records[keep], dtype=np.int64),
                           np.asarray(statistics.loss[keep], dtype=np.float64),
                           np.asarray(statistics.min_k[keep], dtype=np.float64),
                           np.asarray(statistics.accuracy[keep], dtype=np.float64))


def check_outcome(outcome: CandidateVersion, figures: Verification, control: Mapping[str, Any] | None) -> list[str]:
    """Why a result is not verified (empty = verified): every check that blocks its verdict (a
    forgetting check that did not pass, an inconclusive one included; a utility check that
    failed), for every family. An approximate result is judged against the no-op `control` as
    well (`workers/engine/verification/control.py`: the checks must fail the original) and by
    whatever the method itself says blocks it (an exhausted certified-removal budget)."""
    if outcome.method in EXACT:
        return no_op.verdict_reasons(figures.verdicts)
    return no_op.blocking(control, figures.verdicts) + base.get_method(outcome.method).blocking_reasons(outcome.state)
