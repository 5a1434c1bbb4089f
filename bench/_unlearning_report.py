"""Targets of issue 4 and the tables of bench/unlearning.py."""

from __future__ import annotations

from typing import Any

from _common import fmt, markdown_table

TARGETS = {
    # sisa with S=8, one request: at most this share of a full retrain of the same model.
    "sisa_time_fraction": 0.20,
    # Approximate (and certified) methods: share of the full retrain of the same model…
    "approximate_time_fraction": 0.10,
    # …holdout accuracy within 1 point of the retrain reference…
    "holdout_gap": 0.01,
    # …and forget-vs-holdout membership AUC within 0.03 of the retrain reference's.
    "mia_gap": 0.03,
    # A batch of 100 requests costs at most this many times one request.
    "batch_ratio": 3.0,
    # Below this many forget records the AUC's standard error (about 0.29/√n against a large
    # holdout) dwarfs the 0.03 tolerance, so the quality targets are judged on the batch only.
    "min_forget_records_for_quality": 100,
}


def targets_of(row: dict[str, Any], forget_records: int) -> dict[str, Any]:
    """Which targets apply to this row, and whether each holds (None: does not apply)."""
    checks: dict[str, bool | None] = {"time": None, "holdout_gap": None, "mia_gap": None}
    # The same time target judged on CPU seconds, which other processes on the machine disturb less.
    time_cpu = None
    note = ""
    if row["role"] == "reference":
        note = "reference"
    elif row["method"] == "sisa":
        if row["scenario"] == "single":
            checks["time"] = row["time_fraction"] <= TARGETS["sisa_time_fraction"]
            time_cpu = row["cpu_fraction"] <= TARGETS["sisa_time_fraction"]
        else:
            note = "time target is for one request; see the batch table"
    else:
        checks["time"] = row["time_fraction"] <= TARGETS["approximate_time_fraction"]
        time_cpu = row["cpu_fraction"] <= TARGETS["approximate_time_fraction"]
        if forget_records >= TARGETS["min_forget_records_for_quality"]:
            checks["holdout_gap"] = abs(row["holdout_gap"]) <= TARGETS["holdout_gap"]
            checks["mia_gap"] = abs(row["mia_gap"]) <= TARGETS["mia_gap"]
        else:
            note = f"quality not judged: {forget_records} forget records"
    judged = [value for value in checks.values() if value is not None]
    return {"checks": checks, "time_on_cpu": time_cpu, "pass": all(judged) if judged else None, "note": note}


def batch_rows(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    single = {row["method"]: row for row in scenarios["single"]["rows"]}
    out = []
    for row in scenarios["batch"]["rows"]:
        if row["role"] == "reference" and row["method"] != "retrain":
            continue
        one = single[row["method"]]
        ratio = row["wall_s"] / one["wall_s"]
        out.append({"method": row["method"], "single_wall_s": one["wall_s"], "batch_wall_s": row["wall_s"],
                    "ratio": ratio, "cpu_ratio": row["cpu_s"] / one["cpu_s"],
                    "pass": ratio <= TARGETS["batch_ratio"],
                    "pass_on_cpu": row["cpu_s"] / one["cpu_s"] <= TARGETS["batch_ratio"]})
    return out


def _verdict(targets: dict[str, Any]) -> str:
    if targets["pass"] is None:
        return targets["note"] or "–"
    failed = [name for name, value in targets["checks"].items() if value is False]
    text = "FAIL: " + ", ".join(failed) if failed else "pass"
    if targets["time_on_cpu"] is not None and targets["time_on_cpu"] != targets["checks"]["time"]:
        text += f" (time on CPU s: {'pass' if targets['time_on_cpu'] else 'FAIL'})"
    return text + (f"; {targets['note']}" if targets["note"] else "")


def _policy(row: dict[str, Any]) -> str:
    failures = len(row["policy_failures"])
    if row["role"] == "reference" or row["method"] == "sisa":
        # The product never checks exact methods; shown to calibrate the policy itself.
        return "(exact; policy would fail %d)" % failures if failures else "(exact; policy ok)"
    return f"escalate ({failures})" if failures else "verified"


def _signed(value: float | None, scale: float = 1.0, spec: str = "+.2f") -> str:
    return "–" if value is None else format(value * scale, spec)


def print_report(payload: dict[str, Any]) -> None:
    if payload["method_overrides"]:
        print(f"method config overrides: {payload['method_overrides']}")
    else:
        print("method configs: the product defaults (no overrides)")
    print(f"timings: best of {payload['repeats']} run(s) per data set; '× retrain' divides by the full retrain "
          "of the same model (1 MLP network; all 8 SISA shards; the logistic model), in wall and in CPU seconds; "
          "targets are judged on wall time")
    headers = ["method", "wall s", "× retrain", "× retrain (CPU)", "forget acc", "retain acc", "holdout acc", "MIA AUC",
               "Δ holdout (pts)", "Δ MIA", "product policy", "target"]
    for name, data in payload["datasets"].items():
        originals = ", ".join(f"{k} {v['holdout_accuracy']:.4f} (trained in {v['train_s']:.1f} s)"
                              for k, v in data["originals"].items())
        print(f"\n## {name}: {data['rows']:,} rows, {data['subjects']:,} subjects, holdout fraction "
              f"{data['holdout_fraction']}; original holdout accuracy: {originals}")
        for label, result in data["scenarios"].items():
            original = result["original_mlp"]
            print(f"\n### {name}, {result['requests']} request(s), {result['forget_records']} forget records "
                  f"(original MLP: forget acc {fmt(original['forget_accuracy'])}, "
                  f"MIA AUC {fmt(original['mia_auc'])})\n")
            rows = [[row["method"], fmt(row["wall_s"], ".2f"), fmt(row["time_fraction"], ".3f"),
                     fmt(row["cpu_fraction"], ".3f"),
                     fmt(row["forget_accuracy"], ".4f"), fmt(row["retain_accuracy"], ".4f"),
                     fmt(row["holdout_accuracy"], ".4f"), fmt(row["mia_auc"], ".3f"),
                     _signed(row["holdout_gap"], 100), _signed(row["mia_gap"], 1, "+.3f"), _policy(row),
                     _verdict(row["targets"])] for row in result["rows"]]
            print(markdown_table(headers, rows))
        print(f"\n### {name}: 1 request vs a batch of {payload['batch']} (target ≤ {TARGETS['batch_ratio']:g}×)\n")
        rows = [[row["method"], fmt(row["single_wall_s"], ".2f"), fmt(row["batch_wall_s"], ".2f"),
                 fmt(row["ratio"], ".2f"), fmt(row["cpu_ratio"], ".2f"),
                 ("pass" if row["pass"] else "FAIL")
                 + ("" if row["pass"] == row["pass_on_cpu"] else f" (CPU: {'pass' if row['pass_on_cpu'] else 'FAIL'})")]
                for row in data["batch_vs_single"]]
        print(markdown_table(["method", "1 request s", f"{payload['batch']} requests s", "ratio (wall)",
                              "ratio (CPU)", "target"], rows))
