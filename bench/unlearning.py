"""Unlearning methods against an exact retrain: cost and forgetting (docs/benchmarks.md, "Unlearning"; issue 4).

For a generated 100,000-row set and for scikit-learn's digits, trains three models through the
training job's functions: `mlp_classifier` as one network, `mlp_classifier` with SISA S=8 R=4,
and `logistic_regression`. Then, for one erasure request (one subject's records) and for a batch
of 100 requests, it runs every method through the unlearning job's own functions
(`workers.engine.unlearning.job`: retrain, sisa, approximate; `workers.engine.unlearning.verification`:
verify_outcome, check_outcome) and reports wall time
as a fraction of a full retrain of the same model, forget/retain/holdout accuracy, the
membership-inference AUC (forget vs holdout) and the gaps to the retrain reference, against the
targets of issue 4. Prints tables and writes bench/results/unlearning.json.

    .venv/bin/python bench/unlearning.py                  # full run (about 7 min on 2 busy cores)
    .venv/bin/python bench/unlearning.py --quick          # 10,000 generated rows, one repeat
    .venv/bin/python bench/unlearning.py --tuned          # the TUNED method overrides below
    .venv/bin/python bench/unlearning.py --method-config scrub.epochs=3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from _common import (
    LOGISTIC_PARAMS, MLP_PARAMS, RESULTS, describe_machine, digits_records, finish_machine, generated_records,
    machine, setup, timed, train_model, version_metrics, write_json,
)
from _unlearning_report import TARGETS, batch_rows, print_report, targets_of

APPROXIMATE = ("finetune", "neggrad_plus", "scrub", "salun")
SISA = {"shards": 8, "slices": 4}
# Which trained model each method starts from; its retrain is the method's reference.
MODEL_OF = {"retrain": "mlp", "sisa": "sisa", **{m: "mlp" for m in APPROXIMATE}, "certified_newton": "logistic"}
# `--tuned`: overrides that bring the methods closest to the targets on the generated set, found
# by hand. The defaults overshoot: finetune's 3e-3 step costs 1–2 points of holdout accuracy,
# scrub's unbounded max-steps over a large forget set wreck the network, and salun's random-label
# weight pushes the forget loss far above the holdout loss (an AUC well below 0.5).
TUNED = {
    "finetune": {"learning_rate": 1e-3},
    "scrub": {"epochs": 2, "max_epochs": 1, "forget_batch_size": 64, "batch_size": 128},
    "salun": {"forget_weight": 0.05, "learning_rate": 1e-3},
}
REFERENCE_LABEL = {"mlp": "retrain", "sisa": "retrain (SISA S=8, all shards)", "logistic": "retrain (logistic)"}


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`method.key=value` pairs; values are read as JSON where they parse, else as text."""
    overrides: dict[str, dict] = {}
    for item in items:
        target, _, raw = item.partition("=")
        method, _, key = target.partition(".")
        if not key or not raw:
            raise SystemExit(f"--method-config expects method.key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(method, {})[key] = value
    return overrides


@contextmanager
def method_overrides(overrides: dict[str, dict]):
    """`approximate()` always asks for a method's default config; this hands it the overrides
    instead, so the tuned run still goes through the product's code path."""
    from workers.engine.unlearning import base

    original = base.parse_method_config
    base.parse_method_config = lambda name, given=None: original(name, {**overrides.get(name, {}), **(given or {})})
    try:
        yield
    finally:
        base.parse_method_config = original


def context(model, forget_subjects: set[str], new_records):
    from app.unlearning.types import Sisa
    from workers.engine.unlearning.context import Context

    erased = np.array([key in forget_subjects for key in model.records.subject_keys.tolist()], dtype=bool)
    forget_ids = np.intersect1d(model.records.record_ids[erased], model.manifest.trained_ids())
    return Context(
        spec=model.spec, family=model.family, config=model.config, shape=model.shape, seed=model.seed,
        sisa=Sisa.from_json(model.sisa), holdout_fraction=model.holdout_fraction, old_records=model.records,
        new_records=new_records, old_manifest=model.manifest, old_shards=tuple(model.shards), old_state={},
        forget_ids=forget_ids, same_lineage=True,
    )


def without(records, forget_subjects: set[str]):
    from workers.engine.records import Records

    keep = np.array([key not in forget_subjects for key in records.subject_keys.tolist()], dtype=bool)
    return Records(records.record_ids[keep], records.subject_keys[keep], records.features[keep], records.labels[keep])


def run_method(name: str, ctx):
    from workers.engine.unlearning.job import run_method

    return run_method(ctx, name)


def summarise(figures: dict) -> dict:
    after = figures["after"]
    return {"forget_accuracy": after["forget"]["accuracy"], "retain_accuracy": after["retain"]["accuracy"],
            "holdout_accuracy": after["holdout"]["accuracy"], "mia_auc": after["mia_auc"],
            "forget_loss": after["forget"]["loss"], "holdout_loss": after["holdout"]["loss"]}


def measure(models: dict, requests: dict[str, list[str]], repeats: int) -> dict:
    """Every method on every scenario once per repeat, interleaved, so a change of load on the
    machine hits all of them alike (the batch/single ratio compares scenarios too). Figures come
    from the first repeat: every run is deterministic under the model's seed."""
    from app.unlearning.types import EXACT
    from workers.engine.unlearning.job import no_op_control
    from workers.engine.unlearning.verification import check_outcome, verify_outcome

    contexts = {}
    for label, subjects in requests.items():
        forget = set(subjects)
        new_records = without(models["mlp"].records, forget)
        contexts[label] = {kind: context(model, forget, new_records) for kind, model in models.items()}
    jobs = [("reference", kind) for kind in models] + [("method", m) for m in MODEL_OF if m != "retrain"]
    walls = {(label, job): [] for label in requests for job in jobs}
    cpus = {key: [] for key in walls}
    figures = {}
    for repeat in range(repeats):
        for label in requests:
            for job in jobs:
                role, name = job
                ctx = contexts[label][name if role == "reference" else MODEL_OF[name]]
                outcome, wall, cpu = timed(lambda: run_method("retrain" if role == "reference" else name, ctx))
                walls[label, job].append(wall)
                cpus[label, job].append(cpu)
                if repeat == 0:
                    verification = verify_outcome(ctx, outcome, ctx.old_shards)
                    control = no_op_control(ctx) if outcome.method not in EXACT else None
                    figures[label, job] = (verification.to_json(), check_outcome(outcome, verification, control),
                                           outcome.details)
    return {label: scenario_rows(label, len(subjects), contexts[label], jobs,
                                 {job: walls[label, job] for job in jobs}, {job: cpus[label, job] for job in jobs},
                                 {job: figures[label, job] for job in jobs})
            for label, subjects in requests.items()}


def scenario_rows(label: str, requests: int, contexts: dict, jobs: list, walls: dict, cpus: dict,
                  figures: dict) -> dict:
    rows = []
    for job in jobs:
        role, name = job
        kind = name if role == "reference" else MODEL_OF[name]
        reference = ("reference", kind)
        found, failures, details = figures[job]
        row = {
            "method": REFERENCE_LABEL[name] if role == "reference" else name, "model": kind, "role": role,
            # Best of the repeats: other processes only ever add time, so the least disturbed run is
            # the closest to the method's own cost. Medians are kept for comparison.
            "scenario": label, "wall_s": min(walls[job]), "cpu_s": min(cpus[job]),
            "wall_median_s": statistics.median(walls[job]), "cpu_median_s": statistics.median(cpus[job]),
            "wall_runs_s": [round(w, 3) for w in walls[job]], "cpu_runs_s": [round(c, 3) for c in cpus[job]],
            "reference_wall_s": min(walls[reference]),
            "single_network_retrain_wall_s": min(walls[("reference", "mlp")]),
            **summarise(found), "before": summarise({"after": found["before"]}),
            "policy_failures": failures, "details": details,
        }
        row["time_fraction"] = row["wall_s"] / row["reference_wall_s"]
        row["cpu_fraction"] = row["cpu_s"] / min(cpus[reference])
        row["vs_single_network_retrain"] = row["wall_s"] / row["single_network_retrain_wall_s"]
        ref = summarise(figures[reference][0])
        for key in ("holdout", "forget"):
            row[f"{key}_gap"] = row[f"{key}_accuracy"] - ref[f"{key}_accuracy"]
        row["mia_gap"] = row["mia_auc"] - ref["mia_auc"]
        rows.append(row)
    forget_records = len(contexts["mlp"].forget_ids)
    for row in rows:
        row["targets"] = targets_of(row, forget_records)
    original = summarise({"after": figures[("reference", "mlp")][0]["before"]})
    return {"requests": requests, "forget_records": forget_records, "original_mlp": original, "rows": rows}


def run_dataset(name: str, records, holdout_fraction: float, args) -> dict:
    print(f"[{name}] training the three models", flush=True)
    models, originals = {}, {}
    for kind, family, params, sisa in (("mlp", "mlp_classifier", MLP_PARAMS, None),
                                       ("sisa", "mlp_classifier", MLP_PARAMS, SISA),
                                       ("logistic", "logistic_regression", LOGISTIC_PARAMS, None)):
        model = train_model(records, family, params, seed=args.seed, sisa=sisa, holdout_fraction=holdout_fraction)
        models[kind] = model
        metrics = version_metrics(model)
        originals[kind] = {"train_s": round(model.train_s, 3), "holdout_accuracy": metrics["holdout"]["accuracy"],
                           "train_sample_accuracy": metrics["train_sample"]["accuracy"]}
    # Requests are for subjects the models trained on (holdout subjects need no unlearning).
    manifest = models["mlp"].manifest
    trained_keys = np.unique(records.subject_keys[np.isin(records.record_ids, manifest.trained_ids())])
    chosen = np.random.default_rng(args.seed + 1).permutation(trained_keys)[: args.batch].tolist()
    # The single request is a typical subject of the batch (median number of rows), not an
    # accident of the draw such as a subject with one row.
    counts = dict(zip(*np.unique(records.subject_keys, return_counts=True)))
    median = float(np.median([counts[key] for key in chosen]))
    single = next(key for key in chosen if counts[key] >= median)
    repeats = args.repeats if name == "generated" else args.small_repeats
    print(f"[{name}] 1 request and {len(chosen)} requests, {repeats} repeat(s)", flush=True)
    scenarios = measure(models, {"single": [single], "batch": chosen}, repeats)
    return {"rows": len(records.labels), "subjects": int(len(np.unique(records.subject_keys))),
            "holdout_fraction": holdout_fraction, "trained_subjects": int(len(trained_keys)),
            "originals": originals, "scenarios": scenarios, "batch_vs_single": batch_rows(scenarios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the generated data set")
    parser.add_argument("--batch", type=int, default=100, help="requests in the batch scenario")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best reported)")
    parser.add_argument("--small-repeats", type=int, default=9,
                        help="timed runs on digits, where every run takes well under a second")
    parser.add_argument("--datasets", default="generated,digits")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--method-config", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="override an approximate method's default config (repeatable)")
    parser.add_argument("--tuned", action="store_true", help="apply the TUNED overrides (then --method-config)")
    parser.add_argument("--quick", action="store_true", help="10,000 generated rows, one repeat (1–2 min)")
    parser.add_argument("--output", help="default: bench/results/unlearning.json (unlearning_tuned.json with --tuned)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats, args.small_repeats = min(args.rows, 10_000), 1, 1
    overrides = {name: dict(values) for name, values in TUNED.items()} if args.tuned else {}
    for name, values in parse_overrides(args.method_config).items():
        overrides.setdefault(name, {}).update(values)
    output = args.output or str(RESULTS / ("unlearning_tuned.json" if args.tuned else "unlearning.json"))

    results = {}
    with tempfile.TemporaryDirectory(prefix="obliviate-bench-") as tmp, method_overrides(overrides):
        setup(Path(tmp), args.threads)
        info = machine()
        for name in args.datasets.split(","):
            if name == "generated":
                results[name] = run_dataset(name, generated_records(args.rows, args.seed), 0.1, args)
            elif name == "digits":
                # 1,797 rows: a larger holdout than the API's 0.1 keeps the AUC's noise down.
                results[name] = run_dataset(name, digits_records(args.seed), 0.2, args)
            else:
                raise SystemExit(f"unknown data set {name!r}; expected generated and/or digits")
        finish_machine(info)
    payload = {"quick": args.quick, "repeats": {"generated": args.repeats, "digits": args.small_repeats},
               "batch": args.batch, "seed": args.seed,
               "machine": info, "params": {"mlp_classifier": MLP_PARAMS, "logistic_regression": LOGISTIC_PARAMS},
               "sisa": SISA, "method_overrides": overrides, "targets": TARGETS, "datasets": results}
    print(f"\nmachine: {describe_machine(info)}")
    print_report(payload)
    write_json(Path(output), payload)


if __name__ == "__main__":
    main()
