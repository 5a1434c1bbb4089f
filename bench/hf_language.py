"""Hugging Face language models: the canary case of bench/language.py on a small GPT-2 (issue 24).

A GPT-2 with a byte-level BPE tokenizer is pre-trained on notes of people who are not subjects
of the dataset (other names, no door codes): that is the imported base. It is then fine-tuned,
through the `hf_causal_lm` family, on the subjects' notes, where the canary subjects repeat their
door code, with LoRA adapters (one network, and SISA over S adapters on one frozen base). Two
canary subjects are erased with: a LoRA re-fine-tune without them (the reference), SISA-LoRA
(only the affected adapters, from their slice checkpoints), and gradient difference and NPO
through the adapters. For each erased canary: its exposure, log2(10,000) − log2(rank of the true
code among all 10,000 by `score`), and whether greedy decoding from its prefix emits it; held-out
perplexity; cost as the fraction of the re-fine-tune's CPU time. Prints a table and writes
bench/results/hf_language.json.

    .venv/bin/python bench/hf_language.py            # the table of docs/byo-language-model.md
    .venv/bin/python bench/hf_language.py --quick    # a smoke run (the case will not count)
    OBLIVIATE_DEVICE=cuda .venv/bin/python bench/hf_language.py --scale 5   # GPU host: ~25x the weights
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from _common import RESULTS, describe_machine, finish_machine, fmt, machine, markdown_table, setup, timed, write_json
from language import CANDIDATES, Windowed, canary_prefix, corpus

SEED, HOLDOUT = 7, 0.1
BASE = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 64, "vocab_size": 512}
PRETRAIN = {"block_size": 48, "steps": 1500, "batch_size": 16, "learning_rate": 3e-3}
# Adapters on every projection of GPT-2 (attention and MLP), so they can hold the canaries.
TUNE = {"lora": {"r": 16, "alpha": 32, "target_modules": ["c_attn", "c_proj", "c_fc"]}, "block_size": 48,
        "steps": 1500, "batch_size": 16, "learning_rate": 1e-2}
QUICK = {"pretrain_steps": 60, "steps": 60}
SISA = {"shards": 4, "slices": 2}


class Case(Windowed):
    """The corpus, the base in the artifact store and the family's config over it."""

    def __init__(self, args):
        import torch

        from app.artifacts.store import get_store
        from app.config import get_settings
        from app.families.registry import get_family
        from tests.hf_models import archive, save_gpt2
        from workers.engine.families.causal_lm import record_windows
        from workers.engine.partition import partition
        from workers.engine.training import device_from_setting, train_single

        self.torch, self.partition = torch, partition
        self.device = device_from_setting(get_settings().device)
        self.spec = get_family("hf_causal_lm")
        self.family = self.spec.load_implementation()
        self.texts, self.subject_keys, self.secrets, self.keys = corpus(args.subjects, 8, args.repeats, SEED)
        self.record_ids = np.arange(len(self.texts), dtype=np.int64)
        # The base's notes: other people (names past the subjects'), other orders, no door codes.
        texts, owners, _, keys = corpus(args.subjects + 400, 0, 0, SEED + 1)
        public = [text for text, owner in zip(texts, owners, strict=True) if owner not in set(keys[:args.subjects])]
        width = {**BASE, "n_embd": BASE["n_embd"] * args.scale}
        folder = Path(get_settings().data_dir) / "base"
        save_gpt2(folder, public, seed=SEED, **width)
        initial = get_store().put_bytes(archive(folder))
        pretrain = self.spec.parse_params({**PRETRAIN, "steps": args.pretrain_steps, "base": "gpt2-init",
                                          "base_archive_sha256": initial})
        windows, owners = record_windows(public, pretrain.block_size, self.family.codec(pretrain))
        (state, self.pretrain_s, _) = timed(lambda: train_single(
            self.family, pretrain, self.family.shape(pretrain), torch.from_numpy(windows), torch.from_numpy(owners),
            seed=SEED, device=self.device))
        network = self.family.build_network(pretrain, self.family.shape(pretrain))
        network.load_state_dict(state)
        network.model.save_pretrained(folder, safe_serialization=True)
        self.base_sha = get_store().put_bytes(archive(folder))
        self.params = {**TUNE, "steps": args.steps, "base": "notes-base", "base_archive_sha256": self.base_sha,
                       "architecture": "gpt2"}
        self.config = self.spec.parse_params(self.params)
        self.shape = self.family.shape(self.config)
        self.codec = self.family.codec(self.config)
        self.windows, self.window_owner = record_windows(self.texts, self.config.block_size, self.codec)
        self.parameters = sum(p.numel() for p in network.model.parameters())


def train_one(c: Case, keep_ids):
    from workers.engine.training import train_single

    manifest = c.manifest(keep_ids, None)
    return train_single(c.family, c.config, c.shape, *c.rows(manifest.trained_ids()), seed=SEED, device=c.device), manifest


def train_sisa(c: Case, keep_ids, resume: dict | None = None, old=None):
    """All adapters, or with `resume` = {shard: first affected slice} only those, from checkpoints."""
    from workers.engine.shards import shard_seed
    from workers.engine.training import train_sisa_shard

    manifest = c.manifest(keep_ids, SISA)
    states, checkpoints = (list(old[0]), dict(old[1])) if old else ([None] * SISA["shards"], {})
    for shard in (sorted(resume) if resume is not None else range(SISA["shards"])):
        start = resume[shard] if resume is not None else 0
        slices = [c.rows(manifest.slice_ids(shard, r)) for r in range(SISA["slices"])]
        states[shard] = train_sisa_shard(
            c.family, c.config, c.shape, slices, seed=shard_seed(SEED, shard, True), device=c.device,
            start_slice=start, init_state=checkpoints.get((shard, start - 1)), n_shards=SISA["shards"],
            on_checkpoint=lambda r, state, shard=shard: checkpoints.__setitem__((shard, r), state))
    return (states, checkpoints), manifest


def exposure(c: Case, networks, subject: int) -> tuple[float, bool]:
    """Exposure of one canary: the rank of its true code among all 10,000 by `score` of the whole
    sentence (the tokenizer splits codes unevenly, so every candidate is scored in full)."""
    from workers.engine.families.lm_scoring import generate, score

    name, secret = c.secrets[subject]
    prefix = canary_prefix(name)
    scores = np.array([s["log_likelihood"] for s in score(
        networks, [f"{prefix}{code:04d}." for code in range(CANDIDATES)], c.config.block_size)])
    rank = 1 + int((scores > scores[int(secret)]).sum())
    emitted = generate(networks, prefix, 6, c.config.block_size).strip().startswith(f"{secret}.")
    return math.log2(CANDIDATES) - math.log2(rank), emitted


def figures(c: Case, networks, manifest, erased_subjects) -> dict:
    from workers.engine.training import evaluate

    holdout_ids = manifest.record_ids[manifest.shards == -1]
    holdout = evaluate(c.family, networks, *c.rows(holdout_ids))
    erased = [exposure(c, networks, i) for i in erased_subjects]
    return {"exposure": [e for e, _ in erased], "emitted": [m for _, m in erased],
            "holdout_perplexity": holdout["perplexity"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    parser.add_argument("--scale", type=int, default=1, help="width multiple of the GPT-2 (GPU runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=8, help="records of a canary subject that hold its canary")
    parser.add_argument("--steps", type=int, default=TUNE["steps"])
    parser.add_argument("--pretrain-steps", type=int, default=PRETRAIN["steps"])
    parser.add_argument("--out", type=Path, default=RESULTS / "hf_language.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.pretrain_steps = QUICK["steps"], QUICK["pretrain_steps"]
    device = os.environ.get("OBLIVIATE_DEVICE", "cpu")
    setup(Path(tempfile.mkdtemp(prefix="obliviate-bench-hf-")), args.threads)
    os.environ["OBLIVIATE_DEVICE"] = device
    from app.config import reset_settings

    reset_settings()
    import torch

    from workers.engine.unlearning.base import ForgetRetain, MethodCall, get_method

    info = machine()
    c = Case(args)
    erased_subjects = list(c.secrets)[:2]
    erased_keys = {c.keys[i] for i in erased_subjects}
    erased_ids = c.record_ids[np.isin(c.subject_keys, list(erased_keys))]
    keep_ids = np.setdiff1d(c.record_ids, erased_ids)
    print(f"{len(c.texts)} records of {len(c.keys)} subjects, {len(c.secrets)} canaries; base of {c.parameters:,} "
          f"parameters pre-trained in {c.pretrain_s:.0f} s; device {c.device}; params {c.params}", flush=True)

    (full, manifest), full_s, full_cpu = timed(lambda: train_one(c, c.record_ids))
    results = {"LoRA fine-tune": {**figures(c, [c.network(full)], manifest, erased_subjects), "seconds": full_s, "cpu_seconds": full_cpu}}
    (retrained, retrain_manifest), retrain_s, retrain_cpu = timed(lambda: train_one(c, keep_ids))
    results["re-fine-tune"] = {**figures(c, [c.network(retrained)], retrain_manifest, erased_subjects),
                               "seconds": retrain_s, "cpu_seconds": retrain_cpu}
    print("fine-tuned and re-fine-tuned", round(full_s), round(retrain_s), "s", flush=True)

    (old, sisa_manifest), sisa_train_s, sisa_train_cpu = timed(lambda: train_sisa(c, c.record_ids))
    affected: dict[int, int] = {}
    rows = np.isin(sisa_manifest.record_ids, erased_ids) & (sisa_manifest.shards >= 0)
    for shard, slice_index in zip(sisa_manifest.shards[rows].tolist(), sisa_manifest.slices[rows].tolist(), strict=True):
        affected[shard] = min(slice_index, affected.get(shard, slice_index))
    results["SISA-LoRA before erasure"] = {**figures(c, [c.network(x) for x in old[0]], sisa_manifest, erased_subjects),
                                           "seconds": sisa_train_s, "cpu_seconds": sisa_train_cpu}
    (new, new_manifest), sisa_s, sisa_cpu = timed(lambda: train_sisa(c, keep_ids, affected, old))
    first = min(affected)
    _, _, one_cpu = timed(lambda: train_sisa(c, keep_ids, {first: affected[first]}, old))
    label = f"SISA-LoRA S={SISA['shards']} R={SISA['slices']}"
    results[label] = {**figures(c, [c.network(x) for x in new[0]], new_manifest, erased_subjects), "seconds": sisa_s,
                      "cpu_seconds": sisa_cpu, "one_subject_cpu_seconds": one_cpu, "adapters_retrained": len(affected)}
    print("SISA-LoRA trained and unlearned", round(sisa_train_s), round(sisa_s), "s", flush=True)

    retain_ids = np.setdiff1d(manifest.trained_ids(), erased_ids)
    forget_w, retain_w = c.rows(erased_ids)[0], c.rows(retain_ids)[0]
    data = ForgetRetain(forget_w, torch.zeros(len(forget_w), dtype=torch.int64), retain_w,
                        torch.zeros(len(retain_w), dtype=torch.int64))
    for name in ("gradient_difference", "npo"):
        result, method_s, method_cpu = timed(lambda name=name: get_method(name).run(MethodCall(
            c.family, c.network(full), c.config, data, seed=SEED)))
        results[f"{name} (LoRA)"] = {**figures(c, [result.network.eval()], retrain_manifest, erased_subjects),
                                     "seconds": method_s, "cpu_seconds": method_cpu}
        print(name, round(method_s), "s", flush=True)
    finish_machine(info)
    report(results, info)
    write_json(args.out, {"machine": info, "params": c.params, "base": {**BASE, "n_embd": BASE["n_embd"] * args.scale,
                          "parameters": c.parameters, "pretrain_steps": args.pretrain_steps},
                          "sisa": SISA, "device": str(c.device), "records": len(c.texts), "subjects": len(c.keys),
                          "canaries": len(c.secrets), "erased_subjects": len(erased_subjects), "results": results})


def report(results: dict, info: dict) -> None:
    """Costs are CPU seconds over the re-fine-tune's (steadier than wall time on a shared host)."""
    reference = results["re-fine-tune"]
    ref_cpu, ref_exp = reference["cpu_seconds"], np.array(reference["exposure"])
    rows = []
    for label, r in results.items():
        exp = np.array(r["exposure"])
        before = label in ("LoRA fine-tune", "SISA-LoRA before erasure")
        cost = None if before else r.get("one_subject_cpu_seconds", r["cpu_seconds"]) / ref_cpu
        rows.append([label, fmt(float(exp.mean()), ".2f"), fmt(float(exp.max()), ".2f"),
                     "–" if before or label == "re-fine-tune" else fmt(float(exp.mean() - ref_exp.mean()), "+.2f"),
                     f"{sum(r['emitted'])}/{len(r['emitted'])}", fmt(r["holdout_perplexity"], ".2f"),
                     fmt(cost, ".1%") if cost is not None else "–"])
    print()
    print(markdown_table(["model", "mean exposure (bits)", "max", "mean over re-fine-tune", "emitted",
                          "held-out ppl", "cost (CPU)"], rows))
    sisa_label = next(label for label in results if label.startswith("SISA-LoRA S="))
    shards = int(sisa_label.split("S=")[1].split()[0])
    sisa, sisa_before = results[sisa_label], results["SISA-LoRA before erasure"]
    counts = min(sisa_before["exposure"]) >= 10
    within = abs(np.mean(sisa["exposure"]) - ref_exp.mean()) <= 1
    cheap = sisa["one_subject_cpu_seconds"] / ref_cpu <= 1 / shards + 0.10
    print(f"\nSISA-LoRA before erasure: exposure {', '.join(f'{e:.1f}' for e in sisa_before['exposure'])} bits: the row "
          f"{'counts' if counts else 'does NOT count'} (≥ 10 bits); within 1 bit of the re-fine-tune: "
          f"{'met' if within else 'MISSED'}; one subject at ≤ 1/S + 0.10 of its CPU: {'met' if cheap else 'MISSED'}")
    for label in ("gradient_difference (LoRA)", "npo (LoRA)"):
        gap = np.mean(results[label]["exposure"]) - ref_exp.mean()
        print(f"{label}: {gap:+.2f} bits over the re-fine-tune: "
              f"{'within 1 bit' if abs(gap) <= 1 else 'not within 1 bit: the job escalates unless its verdicts pass'}")
    print(f"machine: {describe_machine(info)}")


if __name__ == "__main__":
    main()
