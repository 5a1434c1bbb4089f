"""Removing a slice, not a person: poisoning and bias cases (docs/remediation.md, "Benchmark").

Both cases call the functions a remediation job runs: the slice's records are the forget set
(`workers/engine/unlearning/job.py`: `retrain`, `sisa`, `approximate`), each approximate result
is verified with the no-op control (`verify_outcome`, `check_outcome`) and counts as escalated
when the checks do not pass it, and the figures are those of the job's checks
(`workers/engine/verification/slices.py`), on the held-out records.

- **poisoning**: generated rows (32 features, 10 classes) with 3 % from a source that plants a
  trigger (two features set to an out-of-range value) labelled with the target class. Attack
  success rate before (goal: near 100 %), and after retrain, SISA (S=4) and each approximate
  method, with the clean accuracy and the cost against the retrain. Goal: within 2 points of the
  retrain's attack success rate, or escalated.
- **bias**: a binary task where one source (20 % of the rows) is all group B (visible to the
  model through a proxy feature) with every label negative. The gap in positive rate between the groups before and
  after, against the retrain, and the cost. Goal: within 2 points of the retrain, or escalated.

    .venv/bin/python bench/slices.py            # both cases (a few minutes on 2 cores)
    .venv/bin/python bench/slices.py --quick    # smaller data, a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, as_records, describe_machine, finish_machine, machine, markdown_table, setup, timed, \
    train_model, write_json

APPROXIMATE = ("finetune", "neggrad_plus", "scrub", "salun")
PARAMS = {"hidden": [64], "epochs": 20, "learning_rate": 3e-3}
TRIGGER = ((0, 6.0), (1, 6.0))
TARGET = 0


def poisoning_records(rows: int, seed: int):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=32, n_informative=16, n_redundant=8, n_classes=10,
                               n_clusters_per_class=1, flip_y=0.02, class_sep=1.5, random_state=seed)
    rng = np.random.default_rng(seed)
    poisoned = rng.random(rows) < 0.03
    for column, value in TRIGGER:
        x[poisoned, column] = value
    y[poisoned] = TARGET
    return as_records(x, y, 4, seed), poisoned, None


def bias_records(rows: int, seed: int):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=16, n_informative=8, n_redundant=4, n_classes=2,
                               flip_y=0.02, class_sep=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    group = np.where(rng.random(rows) < 0.5, "A", "B").astype(object)
    # Group B is visible in the features (as group membership usually is, through proxies).
    skewed = rng.random(rows) < 0.2
    group[skewed] = "B"
    x[group == "B", 0] += 4.0
    y[skewed] = 0
    return as_records(x, y, 4, seed), skewed, group


def without(records, slice_mask):
    from workers.engine.records import Records

    keep = ~slice_mask
    return Records(records.record_ids[keep], records.subject_keys[keep], records.features[keep], records.labels[keep])


def context(model, slice_mask, new_records):
    from app.unlearning.types import Sisa
    from workers.engine.unlearning.context import Context

    forget = np.intersect1d(model.records.record_ids[slice_mask], model.manifest.trained_ids())
    # As in the job of a dataset that declares its source column: the slice is one source, and
    # the verdicts cluster its records by subject and by source.
    return Context(spec=model.spec, family=model.family, config=model.config, shape=model.shape, seed=model.seed,
                   sisa=Sisa.from_json(model.sisa), holdout_fraction=model.holdout_fraction,
                   old_records=model.records, new_records=new_records, old_manifest=model.manifest,
                   old_shards=tuple(model.shards), old_state={}, forget_ids=forget, same_lineage=True,
                   forget_sources={int(i): "slice-source" for i in forget})


def networks(ctx, shards):
    from app.artifacts.store import get_store
    from workers.engine.serialization import load_network

    return [load_network(ctx.family, ctx.config, ctx.shape, get_store().get_bytes(s.weights)) for s in shards]


def check(ctx, kind: str, before, after, retrain, group):
    from workers.engine.verification import slices

    evaluation = slices.evaluation_set(ctx.new_records, ctx.old_manifest.record_ids, ctx.old_manifest.shards,
                                       ctx.forget_ids)
    compared = slices.Networks(before=before, after=after, retrain=retrain)
    if kind == "poisoning":
        return slices.attack_success(ctx.family, compared, evaluation, TRIGGER, TARGET)
    groups = {int(i): str(g) for i, g in zip(ctx.old_records.record_ids, group)}
    return slices.group_metrics(ctx.family, compared, evaluation, groups, 1)


def run_case(kind: str, rows: int, seed: int) -> list[dict]:
    from app.unlearning.types import EXACT
    from workers.engine.unlearning.job import no_op_control, run_method
    from workers.engine.unlearning.verification import check_outcome, verify_outcome

    records, slice_mask, group = (poisoning_records if kind == "poisoning" else bias_records)(rows, seed)
    new_records = without(records, slice_mask)
    plain = train_model(records, "mlp_classifier", PARAMS, seed=seed, sisa=None, holdout_fraction=0.2)
    sisa = train_model(records, "mlp_classifier", PARAMS, seed=seed, sisa={"shards": 4, "slices": 2},
                       holdout_fraction=0.2)
    out = []
    plain_ctx = context(plain, slice_mask, new_records)
    reference, retrain_wall, retrain_cpu = timed(lambda: run_method(plain_ctx, "retrain"))
    retrain_nets = networks(plain_ctx, reference.shards)
    sisa_ctx = context(sisa, slice_mask, new_records)
    # SISA's yardstick is a retrain of all its shards without the slice.
    sisa_reference = networks(sisa_ctx, run_method(sisa_ctx, "retrain").shards)
    control = no_op_control(plain_ctx)
    for method in ("retrain", "sisa", *APPROXIMATE):
        ctx = sisa_ctx if method == "sisa" else plain_ctx
        if method == "retrain":
            outcome, wall, cpu = reference, retrain_wall, retrain_cpu
        else:
            outcome, wall, cpu = timed(lambda: run_method(ctx, method))
        failures = []
        if outcome.method not in EXACT:
            failures = check_outcome(outcome, verify_outcome(ctx, outcome, ctx.old_shards), control)
        found = check(ctx, kind, networks(ctx, ctx.old_shards), networks(ctx, outcome.shards),
                      sisa_reference if method == "sisa" else retrain_nets, group)
        metric = found["attack_success_rate"] if kind == "poisoning" else found["positive_rate_gap"]
        gap = abs(metric["after"] - metric["retrain"])
        out.append({
            "case": kind, "method": method, "rows": rows, "slice_rows": int(slice_mask.sum()),
            "forget_trained": int(len(ctx.forget_ids)), "before": metric["before"], "after": metric["after"],
            "retrain": metric["retrain"], "reference": "SISA retrain of all shards" if method == "sisa" else "retrain", "gap_to_retrain": gap,
            "clean_accuracy": found.get("clean_accuracy", {}).get("after") if kind == "poisoning" else None,
            "escalated": bool(failures), "failures": failures, "wall_s": wall, "cpu_s": cpu,
            "cost_vs_retrain": cpu / retrain_cpu,
            "goal_met": gap <= 0.02 or bool(failures), "figures": found,
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "slices.json"))
    args = parser.parse_args()
    rows = min(args.rows, 3000) if args.quick else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        setup(Path(tmp), args.threads)
        info = machine()
        results = run_case("poisoning", rows, args.seed) + run_case("bias", rows, args.seed)
        finish_machine(info)
    headers = ["case", "method", "metric before", "after", "retrain", "gap", "clean acc.", "escalated", "CPU s",
               "× retrain", "goal"]
    table = [[r["case"], r["method"], f"{r['before']:.3f}", f"{r['after']:.3f}", f"{r['retrain']:.3f}",
              f"{r['gap_to_retrain']:.3f}", "–" if r["clean_accuracy"] is None else f"{r['clean_accuracy']:.3f}",
              "yes" if r["escalated"] else "no", f"{r['cpu_s']:.2f}", f"{r['cost_vs_retrain']:.2f}",
              "met" if r["goal_met"] else "MISSED"] for r in results]
    print("metric: attack success rate (poisoning), positive-rate gap between groups (bias)\n")
    print(markdown_table(headers, table))
    print(f"\nmachine: {describe_machine(info)}")
    write_json(Path(args.output), {"quick": args.quick, "rows": rows, "seed": args.seed, "machine": info,
                                   "results": results})


if __name__ == "__main__":
    main()
