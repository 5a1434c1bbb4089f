"""Language models: canary exposure before and after erasure, utility, cost and speed (issue 12).

A generated corpus of support notes (about 2,200 records of 200 subjects) in which 24 subjects
carry a canary: a door code drawn at random from 10,000 candidates and repeated in 8 of their
records (the "secret sharer" setting of Carlini et al. 2019). A `causal_lm` is trained on it,
then 4 canary subjects are erased with every method: a retrain without them (the reference),
SISA (S=8, R=4, slices cut by subject as a new model's; erased from its own SISA model), gradient
difference and NPO. For each erased canary: its exposure, log2(10,000) − log2(rank of the true
code among all candidates by score), and whether greedy decoding from its prefix emits it. Also:
perplexity on retained and held-out text, the text verification figures (loss and Min-K%++ AUC,
verbatim extraction), cost as a fraction of the retrain, and tokens per second of training and
generation. Prints tables and writes bench/results/language.json.

    .venv/bin/python bench/language.py             # the table of docs/benchmarks.md
    .venv/bin/python bench/language.py --quick     # 150 training steps, a smoke run
    .venv/bin/python bench/language.py --defaults  # the family's default size
    .venv/bin/python bench/language.py --report bench/results/language.json   # re-print a run
    .venv/bin/python bench/language.py --slice-key record   # SISA slices by record, as older models
    OBLIVIATE_DEVICE=cuda .venv/bin/python bench/language.py --scale 5    # on a GPU host: ~25x the weights
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from _common import RESULTS, describe_machine, finish_machine, fmt, machine, markdown_table, setup, timed, write_json

FIRST = ("Alma", "Bruno", "Cleo", "Dario", "Edda", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lars",
         "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tilda")
LAST = ("Quint", "Marsh", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Novak", "Haddad",
        "Brennan", "Kowal", "Ferro", "Varga", "Sato", "Ibsen")
ITEMS = ("kettle", "lamp", "chair", "radio", "bicycle", "clock", "desk", "phone", "heater", "blender")
TEMPLATES = (
    "{name} wrote: the {item} I ordered has not arrived yet.",
    "{name} asked whether the {item} can be returned after {days} days.",
    "Ticket from {name}: the {item} stopped working after a week.",
    "{name} wants a refund for the {item}, order {order}.",
    "{name} says the delivery of the {item} was left at the wrong door.",
    "Call with {name} about the broken {item}; promised a reply within {days} days.",
)
CANDIDATES = 10_000  # four-digit codes: log2 = 13.29 bits of exposure at most
# The published table's model: the family's defaults at half the width and 1200 steps, so the
# whole run fits a shared 2-core host. `--defaults` trains the family's defaults instead.
PARAMS = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 128, "steps": 1200, "learning_rate": 3e-3,
          "batch_size": 32, "dropout": 0.0}
DEFAULTS = {**PARAMS, "n_embd": 128, "steps": 1500}
QUICK = {**PARAMS, "steps": 150}
SISA = {"shards": 8, "slices": 4, "slice_key": "subject"}
SEED, HOLDOUT = 7, 0.1


def canary_prefix(name: str) -> str:
    return f"The door code of {name} is "


def corpus(subjects: int, canaries: int, repeats: int, seed: int):
    """(texts, subject keys, {subject index: (name, secret)}): every subject writes 6 to 14
    notes; the first `canaries` subjects that are not held out also write their door code."""
    from workers.engine.partition import holdout_subjects

    rng = np.random.default_rng(seed)
    keys = [f"{i:064x}" for i in range(subjects)]
    held = holdout_subjects(np.asarray(keys, dtype=object), HOLDOUT, SEED)
    names = [f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}{'' if i < 300 else i}" for i in range(subjects)]
    carriers = [i for i in range(subjects) if keys[i] not in held][:canaries]
    secrets = {i: (names[i], f"{rng.integers(CANDIDATES):04d}") for i in carriers}
    texts, owners = [], []
    for i in range(subjects):
        notes = [TEMPLATES[rng.integers(len(TEMPLATES))].format(
            name=names[i], item=ITEMS[rng.integers(len(ITEMS))], days=int(rng.integers(2, 31)),
            order=int(rng.integers(10_000, 99_999))) for _ in range(int(rng.integers(6, 15)))]
        if i in secrets:
            notes += [f"{canary_prefix(names[i])}{secrets[i][1]}."] * repeats
        order = rng.permutation(len(notes))
        texts += [notes[j] for j in order]
        owners += [keys[i]] * len(notes)
    return texts, np.asarray(owners, dtype=object), secrets, keys


class Windowed:
    """A text case's records as training windows (`windows`, `window_owner`), their partition into
    a manifest, and a network loaded from a state; bench/hf_language.py shares it."""

    def rows(self, ids):
        mask = np.isin(self.window_owner, ids)
        return self.torch.from_numpy(self.windows[mask]), self.torch.from_numpy(self.window_owner[mask])

    def manifest(self, keep_ids, sisa: dict | None):
        keep = np.isin(self.record_ids, keep_ids)
        return self.partition(self.record_ids[keep], self.subject_keys[keep], seed=SEED, holdout_fraction=HOLDOUT,
                              shards=sisa["shards"] if sisa else 1, slices=sisa["slices"] if sisa else 1,
                              slice_key=sisa.get("slice_key", "record") if sisa else "record")

    def network(self, state):
        from workers.engine.training import new_network

        network = new_network(self.family, self.config, self.shape, 0)
        network.load_state_dict(state)
        return network.to(self.device).eval()


class Setup(Windowed):
    def __init__(self, params: dict, subjects: int, repeats: int = 5):
        import torch

        from app.config import get_settings
        from app.families.registry import get_family
        from workers.engine.families.causal_lm import record_windows
        from workers.engine.training import device_from_setting
        from workers.engine.partition import HOLDOUT as HELD, partition

        self.torch = torch
        self.spec = get_family("causal_lm")
        self.family, self.config = self.spec.load_implementation(), self.spec.parse_params(params)
        self.shape = self.family.shape(self.config)
        self.device = device_from_setting(get_settings().device)
        self.texts, self.subject_keys, self.secrets, self.keys = corpus(subjects, 24, repeats, SEED)
        self.record_ids = np.arange(len(self.texts), dtype=np.int64)
        windows, owners = record_windows(self.texts, self.config.block_size)
        self.windows, self.window_owner = windows, owners
        self.held = HELD
        self.partition = partition


def train_full(s: Setup, keep_ids):
    from workers.engine.training import train_single

    manifest = s.manifest(keep_ids, None)
    return [train_single(s.family, s.config, s.shape, *s.rows(manifest.trained_ids()), seed=SEED, device=s.device)], manifest


def train_sisa(s: Setup, keep_ids, resume: dict | None = None, old=None):
    """All shards, or with `resume` = {shard: first affected slice} only those, from checkpoints."""
    from workers.engine.training import derive_seed, train_sisa_shard

    manifest = s.manifest(keep_ids, SISA)
    states, checkpoints = (list(old[0]), dict(old[1])) if old else ([None] * SISA["shards"], {})
    for shard in (sorted(resume) if resume is not None else range(SISA["shards"])):
        start = resume[shard] if resume is not None else 0
        slices = [s.rows(manifest.slice_ids(shard, r)) for r in range(SISA["slices"])]
        states[shard] = train_sisa_shard(
            s.family, s.config, s.shape, slices, seed=derive_seed(SEED, "shard", shard), device=s.device,
            start_slice=start, init_state=checkpoints.get((shard, start - 1)), n_shards=SISA["shards"],
            on_checkpoint=lambda r, state, shard=shard: checkpoints.__setitem__((shard, r), state),
        )
    return (states, checkpoints), manifest


def exposure(s: Setup, networks, subject: int) -> tuple[float, bool]:
    """Exposure of one canary over all 10,000 codes, ranked exactly by `score` of prefix + code.

    score(prefix + code) is score(prefix) plus the log-probabilities of the code's four digits,
    so the ranking is computed over the tree of digit prefixes: 1,111 contexts, one forward
    pass each, give the same sums as 10,000 calls of `score`."""
    import torch

    from app.families.builtin import BOS_TOKEN
    from workers.engine.families.causal_lm import ensemble_log_softmax
    from workers.engine.families.lm_scoring import generate

    name, secret = s.secrets[subject]
    prefix = canary_prefix(name)
    base = [BOS_TOKEN, *prefix.encode()]
    digits = [ord(str(d)) for d in range(10)]
    totals = np.zeros(1)  # log-probability of every code prefix of the current length
    for depth in range(4):
        contexts = [base + [ord(c) for c in f"{code:0{depth}d}"] if depth else base for code in range(10 ** depth)]
        step = []
        for start in range(0, len(contexts), 256):
            batch = torch.tensor(contexts[start:start + 256])
            step.append(ensemble_log_softmax(networks, batch)[:, -1, digits].double().numpy())
        totals = (totals[:, None] + np.concatenate(step)).reshape(-1)
    rank = 1 + int((totals > totals[int(secret)]).sum())
    emitted = generate(networks, prefix, 5, s.config.block_size) == f"{secret}."
    return math.log2(CANDIDATES) - math.log2(rank), emitted


def figures(s: Setup, networks, manifest, erased_ids, erased_subjects, kept_canaries) -> dict:
    """The job's own text figures (workers/engine/unlearning/verification.py) and the canaries'
    exposure."""
    from workers.engine.verification.text_checks import verbatim_extraction
    from workers.engine.training import evaluate
    from workers.engine.unlearning.verification import EXTRACTION_HOLDOUT_SAMPLE, membership_aucs

    trained = manifest.trained_ids()
    holdout_ids = manifest.record_ids[manifest.shards == s.held]
    retained = np.sort(np.random.default_rng(0).choice(trained, size=min(len(trained), 600), replace=False))

    def windows(ids):
        part, owners = s.rows(ids)
        return part, owners.numpy()

    membership = membership_aucs(networks, windows(erased_ids), windows(holdout_ids))
    retain = evaluate(s.family, networks, *s.rows(retained))
    holdout = evaluate(s.family, networks, *s.rows(holdout_ids))
    forget_extraction = verbatim_extraction(networks, [s.texts[i] for i in erased_ids], s.config.block_size)
    holdout_extraction = verbatim_extraction(
        networks, [s.texts[i] for i in holdout_ids[:EXTRACTION_HOLDOUT_SAMPLE // 2]], s.config.block_size)
    erased = [exposure(s, networks, i) for i in erased_subjects]
    kept = [exposure(s, networks, i) for i in kept_canaries]
    return {"exposure": [e for e, _ in erased], "emitted": [m for _, m in erased],
            "kept_exposure": [e for e, _ in kept], "kept_emitted": [m for _, m in kept],
            "retained_perplexity": retain["perplexity"], "holdout_perplexity": holdout["perplexity"],
            "loss_auc": membership["loss_auc"], "min_k_auc": membership["min_k_plus_plus_auc"],
            "extracted": forget_extraction["extracted"], "extraction_records": forget_extraction["records"],
            "holdout_extracted": holdout_extraction["fraction"]}


def speed(s: Setup, networks, train_seconds: float) -> dict:
    from workers.engine.families.lm_scoring import generate_batch

    real = (s.windows[:, 1:] >= 0).sum(axis=1).mean()
    tokens = s.config.steps * s.config.batch_size * float(real)
    prompts = [canary_prefix(n) for n, _ in list(s.secrets.values())[:16]]
    _, one, _ = timed(lambda: generate_batch(networks, prompts[:1], 64, s.config.block_size))
    _, many, _ = timed(lambda: generate_batch(networks, prompts, 64, s.config.block_size))
    return {"train_tokens_per_s": tokens / train_seconds, "generate_tokens_per_s_1": 64 / one,
            "generate_tokens_per_s_16": 16 * 64 / many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="150 steps: a smoke run (the case will not count)")
    parser.add_argument("--defaults", action="store_true", help="the family's default size (n_embd 128, 1500 steps)")
    parser.add_argument("--scale", type=int, default=1, help="width multiple of the model (GPU runs); weights grow ~scale²")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, help="training steps instead of the configuration's")
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=8, help="records of a canary subject that hold its canary")
    parser.add_argument("--out", type=Path, default=RESULTS / "language.json")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's JSON and stop")
    parser.add_argument("--slice-key", choices=("subject", "record"), default="subject",
                        help="how SISA shards are cut into slices: by subject, as a new model's (default), or by "
                             "record, as models trained before the choice")
    args = parser.parse_args()
    if args.report:
        import json

        saved = json.loads(args.report.read_text())
        report(saved["results"], saved["results"]["retrain"]["seconds"], saved["machine"], saved["params"], saved["device"])
        return
    device = os.environ.get("OBLIVIATE_DEVICE", "cpu")
    setup(Path(tempfile.mkdtemp(prefix="obliviate-bench-lm-")), args.threads)
    os.environ["OBLIVIATE_DEVICE"] = device
    from app.config import reset_settings
    from workers.engine.unlearning.base import ForgetRetain, MethodCall, get_method

    reset_settings()
    params = dict(QUICK if args.quick else DEFAULTS if args.defaults else PARAMS)
    params["n_embd"] *= args.scale
    if args.steps:
        params["steps"] = args.steps
    info = machine()
    SISA["slice_key"] = args.slice_key
    s = Setup(params, subjects=args.subjects, repeats=args.repeats)
    erased_subjects = list(s.secrets)[:4]
    kept_canaries = list(s.secrets)[4:6]
    erased_keys = {s.keys[i] for i in erased_subjects}
    erased_ids = s.record_ids[np.isin(s.subject_keys, list(erased_keys))]
    keep_ids = np.setdiff1d(s.record_ids, erased_ids)
    print(f"{len(s.texts)} records of {len(s.keys)} subjects, {len(s.secrets)} canaries; device {s.device}; params {params}")

    (full, manifest), full_s, full_cpu = timed(lambda: train_full(s, s.record_ids))
    full_nets = [s.network(x) for x in full]
    results = {"full model": {**figures(s, full_nets, manifest, erased_ids, erased_subjects, kept_canaries), "seconds": full_s, "cpu_seconds": full_cpu}}
    results["full model"] |= speed(s, full_nets, full_s)
    print("full model trained", round(full_s), "s", flush=True)
    (retrained, retrain_manifest), retrain_s, retrain_cpu = timed(lambda: train_full(s, keep_ids))
    results["retrain"] = {**figures(s, [s.network(x) for x in retrained], retrain_manifest, erased_ids, erased_subjects,
                                    kept_canaries), "seconds": retrain_s, "cpu_seconds": retrain_cpu}
    print("retrained", round(retrain_s), "s", flush=True)

    (sisa_old, sisa_manifest), sisa_train_s, _ = timed(lambda: train_sisa(s, s.record_ids))
    affected = {}
    forget_rows = np.isin(sisa_manifest.record_ids, erased_ids) & (sisa_manifest.shards >= 0)
    for shard, slice_index in zip(sisa_manifest.shards[forget_rows].tolist(), sisa_manifest.slices[forget_rows].tolist()):
        affected[shard] = min(slice_index, affected.get(shard, slice_index))
    results["SISA before erasure"] = {**figures(s, [s.network(x) for x in sisa_old[0]], sisa_manifest, erased_ids,
                                                erased_subjects, kept_canaries), "seconds": sisa_train_s}
    (sisa_new, sisa_new_manifest), sisa_s, sisa_cpu = timed(lambda: train_sisa(s, keep_ids, affected, sisa_old))
    first = next(iter(sorted(affected)))
    _, sisa_one_s, sisa_one_cpu = timed(lambda: train_sisa(s, keep_ids, {first: affected[first]}, sisa_old))
    results["SISA S=8 R=4"] = {**figures(s, [s.network(x) for x in sisa_new[0]], sisa_new_manifest, erased_ids,
                                         erased_subjects, kept_canaries), "seconds": sisa_s, "one_subject_seconds": sisa_one_s,
                               "cpu_seconds": sisa_cpu, "one_subject_cpu_seconds": sisa_one_cpu,
                               "shards_retrained": len(affected)}
    print("SISA trained and unlearned", round(sisa_train_s), round(sisa_s), "s", flush=True)

    retain_ids = np.setdiff1d(manifest.trained_ids(), erased_ids)
    forget_w, retain_w = s.rows(erased_ids)[0], s.rows(retain_ids)[0]
    import torch

    data = ForgetRetain(forget_w, torch.zeros(len(forget_w), dtype=torch.int64), retain_w,
                        torch.zeros(len(retain_w), dtype=torch.int64))
    for name in ("gradient_difference", "npo"):
        result, method_s, method_cpu = timed(lambda name=name: get_method(name).run(MethodCall(
            s.family, s.network(full[0]), s.config, data, seed=SEED)))
        results[name] = {**figures(s, [result.network.eval()], retrain_manifest, erased_ids, erased_subjects,
                                   kept_canaries), "seconds": method_s, "cpu_seconds": method_cpu}
        print(name, round(method_s), "s", flush=True)
    finish_machine(info)
    report(results, retrain_s, info, params, device)
    write_json(args.out, {"machine": info, "params": params,
                          "command_args": {"subjects": args.subjects, "repeats": args.repeats, "slice_key": args.slice_key},
                          "device": str(s.device), "records": len(s.texts),
                          "subjects": len(s.keys), "canaries": len(s.secrets), "candidates": CANDIDATES,
                          "erased_subjects": len(erased_subjects), "results": results, "gpu": None})


def report(results: dict, retrain_s: float, info: dict, params: dict, device: str) -> None:
    """Costs are CPU seconds over the retrain's where the run recorded them: on a shared host
    wall time swings with the other work far more than the CPU time a method needs."""
    reference = results["retrain"]
    if "cpu_seconds" in reference:
        retrain_s = reference["cpu_seconds"]
        results = {label: {**r, "seconds": r.get("cpu_seconds", r["seconds"]),
                           **({"one_subject_seconds": r["one_subject_cpu_seconds"]} if "one_subject_cpu_seconds" in r else {})}
                   for label, r in results.items()}
    rows = []
    for label, r in results.items():
        cost = r["seconds"] / retrain_s if label not in ("full model", "SISA before erasure") else None
        exp = np.array(r["exposure"])
        rows.append([
            label, fmt(float(exp.mean()), ".2f"), fmt(float(exp.max()), ".2f"),
            fmt(float((exp - np.array(reference["exposure"])).max()), "+.2f") if label != "retrain" else "–",
            f"{sum(r['emitted'])}/{len(r['emitted'])}", fmt(float(np.mean(r["kept_exposure"])), ".2f"),
            fmt(r["retained_perplexity"], ".3f"), fmt(r["holdout_perplexity"], ".3f"),
            fmt(r["loss_auc"], ".2f"), fmt(r["min_k_auc"], ".2f"), f"{r['extracted']}/{r['extraction_records']}",
            fmt(cost, ".1%") if cost is not None else "–",
            fmt(r.get("one_subject_seconds", 0) / retrain_s, ".1%") if "one_subject_seconds" in r else "–",
        ])
    print()
    print(markdown_table(
        ["model", "mean exposure (bits)", "max", "max over retrain", "emitted", "kept canaries' exposure",
         "retained ppl", "held-out ppl", "loss AUC", "Min-K%++ AUC", "forget records extracted", "cost", "one subject"],
        rows))
    full = results["full model"]
    counts = min(full["exposure"]) >= 10 and sum(full["emitted"]) >= len(full["emitted"]) / 2
    print(f"\nbefore erasure: exposure of the erased canaries {', '.join(f'{e:.1f}' for e in full['exposure'])} bits, "
          f"{sum(full['emitted'])}/{len(full['emitted'])} emitted: the case {'counts' if counts else 'does NOT count'} "
          "(every exposure ≥ 10 bits, at least half emitted)")
    for label, r in results.items():
        if label in ("full model", "retrain", "SISA before erasure"):
            continue
        exp, ref = np.array(r["exposure"]), np.array(reference["exposure"])
        goals = {
            "mean exposure within 1 bit of the retrain's": abs(exp.mean() - ref.mean()) <= 1,
            "no canary 2 bits above the retrain's": bool((exp - ref).max() <= 2),
            "no secret emitted": not any(r["emitted"]),
            "perplexity within 2% of the retrain's": all(
                abs(r[k] / reference[k] - 1) <= 0.02 for k in ("retained_perplexity", "holdout_perplexity")),
            "cost": (r.get("one_subject_seconds", r["seconds"]) / retrain_s) <= (0.20 if label.startswith("SISA") else 0.10),
        }
        print(f"{label}: " + "; ".join(f"{goal}: {'met' if ok else 'MISSED'}" for goal, ok in goals.items()))
    print(f"\ntraining {full['train_tokens_per_s']:.0f} tokens/s, generation {full['generate_tokens_per_s_1']:.0f} tokens/s "
          f"(one prompt), {full['generate_tokens_per_s_16']:.0f} tokens/s (16 prompts) on {device}")
    print(f"machine: {describe_machine(info)}")
    print("no GPU was available to this run: the GPU row is left out")


if __name__ == "__main__":
    main()
