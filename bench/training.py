"""Training time: one network against SISA with S shards (docs/benchmarks.md, "Training"; issue 3).

Generates a classification data set (default 100,000 rows, 32 features, 10 classes, about 8
rows per subject), then trains `mlp_classifier` with fixed hyper-parameters through the training
job's own functions (`partition`, `train_shards`, `evaluate_version`): once as a single network
and once per SISA configuration. Prints a table and writes bench/results/training.json.

    .venv/bin/python bench/training.py                 # 100,000 rows, S = 4 and 8, R = 4
    .venv/bin/python bench/training.py --quick         # 10,000 rows, a smoke run
    .venv/bin/python bench/training.py --threads 2     # torch intra-op threads (default 1)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (
    MLP_PARAMS, RESULTS, describe_machine, finish_machine, fmt, generated_records, machine, markdown_table, setup,
    train_model, version_metrics, write_json,
)


def train(records, sisa: dict | None, args):
    return train_model(records, "mlp_classifier", MLP_PARAMS, seed=args.seed, sisa=sisa,
                       holdout_fraction=args.holdout_fraction)


def summarise(runs: list, sisa: dict | None) -> dict:
    """Best of the repeats: other processes only ever add time. Every repeat trains the same
    weights (deterministic under the seed), so the figures come from the first."""
    model = runs[0]
    metrics = version_metrics(model)
    trained = len(model.manifest.trained_ids())
    shard_rows = [int((model.manifest.shards == s).sum()) for s in range(len(model.shards))]
    best = min(r.train_s for r in runs)
    return {
        "config": "1 network" if sisa is None else f"SISA S={sisa['shards']} R={sisa['slices']}",
        "shards": sisa["shards"] if sisa else 1, "slices": sisa["slices"] if sisa else 1,
        "trained_rows": trained, "shard_rows_min": min(shard_rows), "shard_rows_max": max(shard_rows),
        "partition_s": round(min(r.partition_s for r in runs), 3), "train_s": round(best, 3),
        "train_cpu_s": round(min(r.train_cpu_s for r in runs), 3),
        "train_runs_s": [round(r.train_s, 3) for r in runs],
        "train_cpu_runs_s": [round(r.train_cpu_s, 3) for r in runs],
        # A one-subject erasure under SISA retrains at most one shard: the upper bound of its cost.
        "one_shard_s": round(best / len(model.shards), 3),
        "holdout_accuracy": metrics["holdout"]["accuracy"], "holdout_loss": metrics["holdout"]["loss"],
        "train_sample_accuracy": metrics["train_sample"]["accuracy"], "holdout_rows": metrics["records"]["holdout"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--shards", default="4,8", help="comma-separated SISA shard counts")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--holdout-fraction", type=float, default=0.1, help="the API's default")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="trainings per configuration (best reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10,000 rows: a smoke run of about a minute")
    parser.add_argument("--output", default=str(RESULTS / "training.json"))
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = min(args.rows, 10_000), 1

    with tempfile.TemporaryDirectory(prefix="obliviate-bench-") as tmp:
        setup(Path(tmp), args.threads)
        info = machine()
        records = generated_records(args.rows, args.seed, features=args.features)
        configs = [None] + [{"shards": int(s), "slices": args.slices} for s in args.shards.split(",") if s]
        runs: list[list] = [[] for _ in configs]
        # Configurations interleaved within each repeat, so a change of load hits them alike.
        for repeat in range(args.repeats):
            for index, sisa in enumerate(configs):
                runs[index].append(train(records, sisa, args))
                print(f"  repeat {repeat + 1}, {sisa or '1 network'}: {runs[index][-1].train_s:.1f} s", flush=True)
        results = [summarise(model_runs, sisa) for model_runs, sisa in zip(runs, configs)]
        finish_machine(info)

    single = results[0]["train_s"]
    single_cpu = results[0]["train_cpu_s"]
    for result in results:
        result["vs_single"] = round(result["train_s"] / single, 3)
        result["vs_single_cpu"] = round(result["train_cpu_s"] / single_cpu, 3)
    payload = {
        "rows": args.rows, "features": args.features, "classes": 10, "subjects": int(len(set(records.subject_keys))),
        "holdout_fraction": args.holdout_fraction, "seed": args.seed, "family": "mlp_classifier",
        "params": MLP_PARAMS, "quick": args.quick, "repeats": args.repeats, "machine": info, "results": results,
    }
    print()
    print(f"mlp_classifier training on {args.rows:,} generated rows ({args.features} features, 10 classes, "
          f"{payload['subjects']:,} subjects); params {MLP_PARAMS}")
    print(f"machine: {describe_machine(info)}; times: best of {args.repeats} run(s)\n")
    headers = ["config", "trained rows", "rows/shard", "wall s", "CPU s", "× 1 network", "× 1 network (CPU)",
               "wall s / shard",
               "holdout acc", "train acc"]
    rows = [[r["config"], f"{r['trained_rows']:,}",
             f"{r['shard_rows_min']:,}" if r["shards"] == 1 else f"{r['shard_rows_min']:,}–{r['shard_rows_max']:,}",
             fmt(r["train_s"], ".1f"), fmt(r["train_cpu_s"], ".1f"), fmt(r["vs_single"], ".2f"),
             fmt(r["vs_single_cpu"], ".2f"),
             fmt(r["one_shard_s"], ".1f") if r["shards"] > 1 else "–", fmt(r["holdout_accuracy"], ".4f"),
             fmt(r["train_sample_accuracy"], ".4f")]
            for r in results]
    print(markdown_table(headers, rows))
    write_json(Path(args.output), payload)


if __name__ == "__main__":
    main()
