"""Producing the new model version of an unlearning job: exact (retrain, sisa), approximate
(finetune, neggrad_plus, scrub, salun) or certified (certified_newton), with verification and
escalation to an exact method when an approximate result misses its thresholds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.artifacts.store import get_store
from app.config import get_settings
from workers.engine.serialization import load_network, state_to_bytes
from workers.engine.training import train_single
from workers.partition import HOLDOUT, Manifest, partition
from workers.training import Records, train_shards

log = logging.getLogger("obliviate.unlearning")
APPROXIMATE = ("finetune", "neggrad_plus", "scrub", "salun")
RETAIN_SAMPLE = 20_000


@dataclass
class Context:
    """Everything about one model's unlearning that the method steps need."""

    spec: Any
    family: Any
    config: Any
    shape: Any
    seed: int
    sisa: dict | None
    holdout_fraction: float
    old_records: Records
    new_records: Records
    old_manifest: Manifest
    old_shards: list[dict]
    old_state: dict
    forget_ids: np.ndarray
    # The new dataset version descends directly from the one the model was trained on, so every
    # record id means the same row in both and SISA checkpoints stay valid.
    same_lineage: bool
    progress: Any = None
    escalations: list[dict] = field(default_factory=list)


@dataclass
class Outcome:
    method: str
    manifest: Manifest
    shards: list[dict]
    state: dict
    details: dict


def choose_method(model, rows: int) -> str:
    if model.unlearning_method:
        return model.unlearning_method
    if model.sisa:
        return "sisa"
    if rows <= get_settings().small_model_rows:
        return "retrain"
    return get_settings().approximate_method


def retrain(ctx: Context) -> Outcome:
    manifest = _new_partition(ctx)
    shard_count = ctx.sisa["shards"] if ctx.sisa else 1
    trained = train_shards(
        family=ctx.family, config=ctx.config, shape=ctx.shape, records=ctx.new_records, manifest=manifest,
        seed=ctx.seed, sisa=ctx.sisa, shard_list=list(range(shard_count)), progress=ctx.progress, label="retrain: ",
    )
    return Outcome("retrain", manifest, [trained[s] for s in range(shard_count)], {}, {"shards_retrained": shard_count})


def sisa(ctx: Context) -> Outcome:
    """Retrain only the shards holding forget records, each from its checkpoint before the first
    affected slice; unaffected shards keep their weights and checkpoints."""
    if not ctx.sisa:
        raise ValueError("the sisa method needs a model trained with SISA")
    if not ctx.same_lineage:
        outcome = retrain(ctx)
        outcome.method, outcome.details["note"] = "sisa", "dataset changed since training: all shards retrained"
        return outcome
    manifest = _new_partition(ctx)
    forget = np.isin(ctx.old_manifest.record_ids, ctx.forget_ids) & (ctx.old_manifest.shards != HOLDOUT)
    first_slice: dict[int, int] = {}
    for shard, slice_index in zip(ctx.old_manifest.shards[forget].tolist(), ctx.old_manifest.slices[forget].tolist()):
        first_slice[shard] = min(slice_index, first_slice.get(shard, slice_index))
    store = get_store()
    resume = {}
    for shard, start in first_slice.items():
        old = ctx.old_shards[shard]
        state = None
        if start > 0:
            from workers.engine.serialization import bytes_to_state

            state, _ = bytes_to_state(store.get_bytes(old["checkpoints"][start - 1]))
        for r in range(start):  # the slices before the first affected one are unchanged by design
            if not np.array_equal(manifest.slice_ids(shard, r), ctx.old_manifest.slice_ids(shard, r)):
                raise RuntimeError(f"shard {shard} slice {r} changed although it held no erased record")
        resume[shard] = (start, state, old["checkpoints"])
    trained = train_shards(
        family=ctx.family, config=ctx.config, shape=ctx.shape, records=ctx.new_records, manifest=manifest,
        seed=ctx.seed, sisa=ctx.sisa, shard_list=sorted(first_slice), resume=resume, progress=ctx.progress,
        label="sisa: ",
    )
    shards = [trained.get(s, ctx.old_shards[s]) for s in range(ctx.sisa["shards"])]
    details = {
        "shards_retrained": sorted(first_slice), "from_slice": {str(s): k for s, k in first_slice.items()},
        "slices_retrained": sum(ctx.sisa["slices"] - k for k in first_slice.values()),
        "slices_total": ctx.sisa["shards"] * ctx.sisa["slices"],
    }
    return Outcome("sisa", manifest, shards, {}, details)


def approximate(ctx: Context, method_name: str) -> Outcome:
    """Apply an approximate or certified method to the current network(s) of the model."""
    from workers.engine.unlearning.base import ForgetRetain, get_method, parse_method_config

    method = get_method(method_name)
    store = get_store()
    forget_x, forget_y = ctx.old_records.rows_for(np.sort(ctx.forget_ids))
    # The Newton step minimises the objective over every retained record, so no sampling there.
    retain_ids = _retain_ids(ctx, limit=None if method_name == "certified_newton" else RETAIN_SAMPLE)
    retain_x, retain_y = ctx.old_records.rows_for(retain_ids)
    data = ForgetRetain(forget_x, forget_y, retain_x, retain_y)
    shards, details = [], {}
    for index, old in enumerate(ctx.old_shards):
        network = load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(old["weights"]))
        result = method.run(ctx.family, network, ctx.config, data, parse_method_config(method_name, None),
                            seed=ctx.seed, progress=ctx.progress)
        weights = store.put_bytes(state_to_bytes({k: v.detach() for k, v in result.network.state_dict().items()}, {"shard": str(index)}))
        shards.append({"shard": index, "weights": weights, "checkpoints": []})
        details = result.details
    manifest = without_forget(ctx)
    state = dict(ctx.old_state)
    if method_name == "certified_newton":
        # The first removal also pays for the training run's own distance from the optimum.
        spent = ctx.old_state.get("residual_spent")
        spent = float(details["input_residual_norm"]) if spent is None else float(spent)
        state["residual_spent"] = spent + float(details["residual_norm"])
        state["budget"] = float(details["budget"])
    return Outcome(method_name, manifest, shards, state, details)


def verify(ctx: Context, outcome: Outcome, before_shards: list[dict]) -> dict[str, Any]:
    """Figures before and after on the forget records, a retain sample and the holdout, plus the
    lineage proof (no forget record in the new manifest)."""
    from workers.engine import verification

    store = get_store()
    forget = ctx.old_records.rows_for(np.sort(ctx.forget_ids))
    retain = ctx.old_records.rows_for(_retain_ids(ctx, limit=5000))
    holdout_ids = np.sort(outcome.manifest.record_ids[outcome.manifest.shards == HOLDOUT])
    holdout_ids = holdout_ids[np.isin(holdout_ids, ctx.new_records.record_ids)]
    holdout = ctx.new_records.rows_for(holdout_ids) if len(holdout_ids) else None

    def networks(shards):
        return [load_network(ctx.family, ctx.config, ctx.shape, store.get_bytes(s["weights"])) for s in shards]

    before = verification.verify(ctx.family, networks(before_shards), forget, retain, holdout)
    after = verification.verify(ctx.family, networks(outcome.shards), forget, retain, holdout)
    trained_after = outcome.manifest.trained_ids()
    figures = {
        "before": before, "after": after,
        "lineage_proof": {"forget_records": int(len(ctx.forget_ids)),
                          "in_new_manifest": int(np.isin(ctx.forget_ids, trained_after).sum())},
        "holdout_available": holdout is not None,
    }
    if holdout is None and outcome.method not in ("retrain", "sisa"):
        figures["reference"] = _sampled_reference(ctx, forget)
    return figures


def check(outcome: Outcome, figures: dict) -> list[str]:
    """Failed checks of an approximate result (empty = verified)."""
    from workers.engine.verification import Thresholds, check_thresholds

    settings = get_settings()
    thresholds = Thresholds(
        max_forget_holdout_gap=settings.max_forget_holdout_gap, max_mia_auc=settings.max_mia_auc,
        max_holdout_drop=settings.max_holdout_drop,
    )
    if not figures["holdout_available"]:
        reference = figures.get("reference") or {}
        gap = abs((figures["after"]["forget"]["accuracy"] or 0) - (reference.get("forget_accuracy") or 0))
        return [] if gap <= thresholds.max_forget_holdout_gap else [
            f"no holdout: forget accuracy differs from a sampled retrain reference by {gap * 100:.1f} points"
        ]
    result = check_thresholds(figures["after"], figures["before"], thresholds)
    failed = list(result.failed) + list(result.not_applicable)
    if outcome.method == "certified_newton":
        spent, budget = outcome.state.get("residual_spent", 0.0), outcome.state.get("budget", 0.0)
        if spent > budget:
            failed.append(f"certified removal budget exhausted ({spent:.4g} > {budget:.4g})")
    return failed


def _new_partition(ctx: Context) -> Manifest:
    return partition(
        ctx.new_records.record_ids, ctx.new_records.subject_keys, seed=ctx.seed,
        holdout_fraction=ctx.holdout_fraction, shards=ctx.sisa["shards"] if ctx.sisa else 1,
        slices=ctx.sisa["slices"] if ctx.sisa else 1,
    )


def without_forget(ctx: Context) -> Manifest:
    keep = ~np.isin(ctx.old_manifest.record_ids, ctx.forget_ids) & np.isin(ctx.old_manifest.record_ids, ctx.new_records.record_ids)
    return Manifest(ctx.old_manifest.record_ids[keep], ctx.old_manifest.shards[keep], ctx.old_manifest.slices[keep])


def _retain_ids(ctx: Context, limit: int | None = RETAIN_SAMPLE) -> np.ndarray:
    trained = ctx.old_manifest.trained_ids()
    retain = trained[~np.isin(trained, ctx.forget_ids)]
    if limit is not None and len(retain) > limit:
        retain = np.random.default_rng(ctx.seed).choice(retain, size=limit, replace=False)
    return np.sort(retain)


def _sampled_reference(ctx: Context, forget) -> dict[str, Any]:
    """Without a holdout, an approximate result is compared with a network retrained on a sample
    of the retained records: the forget records should look as unfamiliar to both."""
    from workers.engine.training import device_from_setting, evaluate, new_network

    ids = _retain_ids(ctx, limit=5000)
    features, labels = ctx.old_records.rows_for(ids)
    state = train_single(ctx.family, ctx.config, ctx.shape, features, labels, seed=ctx.seed, device=device_from_setting("cpu"))
    network = new_network(ctx.family, ctx.config, ctx.shape, ctx.seed)
    network.load_state_dict(state)
    figures = evaluate(ctx.family, network, *forget)
    return {"forget_accuracy": figures["accuracy"], "forget_loss": figures["loss"], "retain_sample": int(len(ids))}

