"""Hugging Face language models: the canary case of bench/language.py on a small GPT-2 (issue 24).

A GPT-2 with a byte-level BPE tokenizer is pre-trained on notes of people who are not subjects
of the dataset (other names, no door codes): that is the imported base. It is then fine-tuned,
through the `hf_causal_lm` family, on the subjects' notes, where the canary subjects repeat their
door code, with LoRA adapters (one network, and SISA over S adapters on one frozen base). Two
canary subjects are erased with: a LoRA re-fine-tune without them (the reference), SISA-LoRA
(only the affected adapters, from their slice checkpoints; slices cut by subject as a new
model's, `--slice-key record` for the older layout), and gradient difference and NPO through the
adapters. For each erased canary: its exposure, log2(10,000) − log2(rank of the true
code among all 10,000 by `score`), and whether greedy decoding from its prefix emits it; held-out
perplexity; cost as the fraction of the re-fine-tune's CPU time.

The approximate rows run through the unlearning job's own steps (`workers.engine.unlearning.job`:
`run_method`, `no_op_control`, `verified`), so their verdict is the one a job would reach: the
text checks against the model's reference adapters and the no-op control. A verdict that does
not certify escalates the job to the exact path. The references are the confirmation half of a
pool of OBLIVIATE_AUDIT_REFERENCES (positions 4–7 of 8), trained by
`workers.reference_training.train_positions`: a language model's verdicts read only that half
(`workers/engine/unlearning/verification.py`), so the tuning half is not trained here.

Prints a table and writes bench/results/hf_language.json; with `--device cuda` it also reports
training and generation throughput in tokens/s.

    .venv/bin/python bench/hf_language.py            # the table of docs/byo-language-model.md
    .venv/bin/python bench/hf_language.py --quick    # a smoke run (the case will not count)
    .venv/bin/python bench/hf_language.py --device cuda --scale 6   # GPU host: 27.5x the weights
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import uuid
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
# SISA layouts (shards × slices), each measured on its own. Scoring uses the mean of the S
# adapters' next-token distributions, so the one adapter that saw a canary carries 1/S of each
# of its tokens' probability, against the other adapters' favourite codes.
SISA = ["4x2", "2x2"]
# Records of a canary subject that hold its canary (8 left the S=4 canaries at 6.7 and 11.0 bits).
REPEATS = 32


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
        from workers.engine.records import TextRecords
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
        # The dataset version as a job reads it (window labels are record ids: ids are positions).
        self.records = TextRecords(record_ids=self.record_ids, subject_keys=self.subject_keys,
                                   features=self.windows, labels=self.record_ids[self.window_owner], texts=self.texts)

    def without(self, erased_ids) -> "TextRecords":
        """The next dataset version: the erased records gone, every other id unchanged."""
        from workers.engine.records import TextRecords

        keep = ~np.isin(self.record_ids, erased_ids)
        windows = ~np.isin(self.window_owner, erased_ids)
        return TextRecords(record_ids=self.record_ids[keep], subject_keys=self.subject_keys[keep],
                           features=self.windows[windows], labels=self.record_ids[self.window_owner[windows]],
                           texts=[t for t, k in zip(self.texts, keep, strict=True) if k])


def train_one(c: Case, keep_ids):
    from workers.engine.training import train_single

    manifest = c.manifest(keep_ids, None)
    return train_single(c.family, c.config, c.shape, *c.rows(manifest.trained_ids()), seed=SEED, device=c.device), manifest


def train_sisa(c: Case, sisa: dict, keep_ids, resume: dict | None = None, old=None):
    """All adapters, or with `resume` = {shard: first affected slice} only those, from checkpoints."""
    from workers.engine.shards import shard_seed
    from workers.engine.training import train_sisa_shard

    manifest = c.manifest(keep_ids, sisa)
    states, checkpoints = (list(old[0]), dict(old[1])) if old else ([None] * sisa["shards"], {})
    for shard in (sorted(resume) if resume is not None else range(sisa["shards"])):
        start = resume[shard] if resume is not None else 0
        slices = [c.rows(manifest.slice_ids(shard, r)) for r in range(sisa["slices"])]
        states[shard] = train_sisa_shard(
            c.family, c.config, c.shape, slices, seed=shard_seed(SEED, shard, True), device=c.device,
            start_slice=start, init_state=checkpoints.get((shard, start - 1)), n_shards=sisa["shards"],
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


def sisa_rows(c: Case, layout: str, keep_ids, erased_ids, erased_subjects, slice_key: str = "subject") -> dict:
    """SISA-LoRA with `layout` ("SxR") before and after the erasure, and one subject's cost: its
    one adapter retrained from the checkpoint before its first affected slice."""
    shards, slices = (int(n) for n in layout.split("x"))
    sisa = {"shards": shards, "slices": slices, "slice_key": slice_key}
    (old, manifest), train_s, train_cpu = timed(lambda: train_sisa(c, sisa, c.record_ids))
    affected: dict[int, int] = {}
    rows = np.isin(manifest.record_ids, erased_ids) & (manifest.shards >= 0)
    for shard, slice_index in zip(manifest.shards[rows].tolist(), manifest.slices[rows].tolist(), strict=True):
        affected[shard] = min(slice_index, affected.get(shard, slice_index))
    label = f"SISA-LoRA S={shards} R={slices}"
    networks = [c.network(x) for x in old[0]]
    # Each erased canary under the one adapter that trained on it, alone: what the mean over the
    # S adapters dilutes.
    own = []
    for subject in erased_subjects:
        shard = int(manifest.shards[np.isin(manifest.record_ids, c.record_ids[c.subject_keys == c.keys[subject]])].max())
        own.append(exposure(c, [networks[shard]], subject)[0])
    found = {f"{label}, before erasure": {**figures(c, networks, manifest, erased_subjects),
                                          "exposure_own_adapter": own, "seconds": train_s, "cpu_seconds": train_cpu}}
    (new, new_manifest), sisa_s, sisa_cpu = timed(lambda: train_sisa(c, sisa, keep_ids, affected, old))
    first = min(affected)
    _, _, one_cpu = timed(lambda: train_sisa(c, sisa, keep_ids, {first: affected[first]}, old))
    found[label] = {**figures(c, [c.network(x) for x in new[0]], new_manifest, erased_subjects), "seconds": sisa_s,
                    "cpu_seconds": sisa_cpu, "one_subject_cpu_seconds": one_cpu, "adapters_retrained": len(affected),
                    "one_subject_from_slice": affected[first], "shards": shards, "slices": slices}
    print(label, "trained and unlearned", round(train_s), round(sisa_s), "s", flush=True)
    return found


def approximate_rows(c: Case, full, manifest, erased_ids, erased_subjects, method_steps: int | None) -> tuple[dict, dict]:
    """Gradient difference and NPO as the unlearning job runs them on the LoRA fine-tune, each
    judged by the job's verdicts (`job.verified` against `job.no_op_control`): certified, or
    escalated to the exact path with the reasons."""
    from app.artifacts.store import get_store
    from app.config import get_settings
    from app.families.registry import get_family
    from app.unlearning.types import ReferenceModel, Shard
    from workers import reference_training
    from workers.engine.serialization import load_network, state_to_bytes
    from workers.engine.unlearning import job
    from workers.engine.unlearning.context import Context
    from workers.engine.verification.checks import stored_checks
    from workers.engine.verification.references import split

    store = get_store()
    pool_size = get_settings().audit_references
    pool_size -= pool_size % 2
    everyone = [ReferenceModel(uuid.uuid4(), k, pool_size, SEED, "") for k in range(pool_size)]
    positions = sorted(r.position for r in split(everyone, pool_size).confirmation)
    trained, references_s, references_cpu = timed(lambda: reference_training.train_positions(
        c.family, c.config, c.shape, c.records, manifest.trained_ids(), seed=SEED, size=pool_size,
        positions=positions))
    refs = tuple(ReferenceModel(uuid.uuid4(), k, pool_size, SEED, sha) for k, sha in trained.items())
    print(f"{len(refs)} reference adapters (positions {positions} of {pool_size}) in {references_s:.0f} s", flush=True)
    weights = store.put_bytes(state_to_bytes({k: v.detach() for k, v in full.items()}, {"shard": "0"}))
    ctx = Context(spec=get_family("hf_causal_lm"), family=c.family, config=c.config, shape=c.shape, seed=SEED,
                  sisa=None, holdout_fraction=HOLDOUT, old_records=c.records, new_records=c.without(erased_ids),
                  old_manifest=manifest, old_shards=(Shard(shard=0, weights=weights),), old_state={},
                  forget_ids=np.intersect1d(erased_ids, manifest.trained_ids()), same_lineage=True,
                  references=refs, reference_pool=pool_size)
    control = job.no_op_control(ctx)
    print("no-op control: testable" if control["testable"] else "no-op control: NOT testable", flush=True)
    rows: dict = {}
    for name in ("gradient_difference", "npo"):
        settings = {"steps": method_steps} if method_steps else None
        outcome, method_s, method_cpu = timed(lambda name=name: job.run_method(ctx, name, settings))
        _, verification, failed = job.verified(ctx, outcome, control)
        networks = [load_network(c.family, c.config, c.shape, store.get_bytes(s.weights)).to(c.device).eval()
                    for s in outcome.shards]
        verdicts = verification.verdicts or {}
        rows[f"{name} (LoRA)"] = {
            **figures(c, networks, outcome.manifest, erased_subjects), "seconds": method_s,
            "cpu_seconds": method_cpu, "verdict": verdicts.get("verdict"), "escalated": bool(failed),
            "reasons": failed, "control_testable": bool(control["testable"]),
            "checks": {check.name: check.verdict for check in stored_checks(verdicts)}}
        print(name, round(method_s), "s;", "escalated" if failed else "certified", failed[:2], flush=True)
    return rows, {"positions": positions, "pool_size": pool_size, "seconds": references_s,
                  "cpu_seconds": references_cpu, "no_op_control_testable": bool(control["testable"])}


def throughput(c: Case, state, seconds: float) -> dict:
    """Tokens/s of the LoRA fine-tune (positions trained: steps × batch × block) and of greedy
    generation (8 prompts at once, 32 new tokens each)."""
    from workers.engine.families.lm_scoring import generate_batch

    network = c.network(state)
    prompts = [canary_prefix(name) for name, _ in list(c.secrets.values())[:8]]
    start = time.perf_counter()
    out = generate_batch([network], prompts, 32, c.config.block_size)
    generation_s = time.perf_counter() - start
    return {"device": str(c.device), "training_tokens_per_s": c.config.steps * c.config.batch_size * c.config.block_size / seconds,
            "generation_tokens_per_s": sum(len(o) for o in out) / generation_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    parser.add_argument("--device", default=os.environ.get("OBLIVIATE_DEVICE", "cpu"),
                        help="cpu, cuda or auto (OBLIVIATE_DEVICE): training, unlearning and scoring run there")
    parser.add_argument("--scale", type=int, default=1, help="width multiple of the GPT-2 (GPU runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="records of a canary subject that hold its canary")
    parser.add_argument("--steps", type=int, default=TUNE["steps"])
    parser.add_argument("--pretrain-steps", type=int, default=PRETRAIN["steps"])
    parser.add_argument("--sisa", nargs="+", default=SISA, help="SISA layouts, shards x slices (e.g. 4x2)")
    parser.add_argument("--slice-key", choices=("subject", "record"), default="subject",
                        help="how SISA adapters' data are cut into slices: by subject, as a new model's (default), "
                             "or by record, as models trained before the choice")
    parser.add_argument("--method-steps", type=int, default=None, help="the approximate methods' steps (their default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "hf_language.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.pretrain_steps = QUICK["steps"], QUICK["pretrain_steps"]
    setup(Path(tempfile.mkdtemp(prefix="obliviate-bench-hf-")), args.threads)
    os.environ["OBLIVIATE_DEVICE"] = args.device
    from app.config import reset_settings

    reset_settings()
    info = machine()
    c = Case(args)
    erased_subjects = list(c.secrets)[:2]
    erased_keys = {c.keys[i] for i in erased_subjects}
    erased_ids = c.record_ids[np.isin(c.subject_keys, list(erased_keys))]
    keep_ids = np.setdiff1d(c.record_ids, erased_ids)
    print(f"{len(c.texts)} records of {len(c.keys)} subjects, {len(c.secrets)} canaries; base of {c.parameters:,} "
          f"parameters pre-trained in {c.pretrain_s:.0f} s; device {c.device}; params {c.params}", flush=True)

    (full, manifest), full_s, full_cpu = timed(lambda: train_one(c, c.record_ids))
    results = {"LoRA fine-tune": {**figures(c, [c.network(full)], manifest, erased_subjects), "seconds": full_s,
                                  "cpu_seconds": full_cpu, **throughput(c, full, full_s)}}
    (retrained, retrain_manifest), retrain_s, retrain_cpu = timed(lambda: train_one(c, keep_ids))
    results["re-fine-tune"] = {**figures(c, [c.network(retrained)], retrain_manifest, erased_subjects),
                               "seconds": retrain_s, "cpu_seconds": retrain_cpu}
    print("fine-tuned and re-fine-tuned", round(full_s), round(retrain_s), "s", flush=True)

    for layout in args.sisa:
        results |= sisa_rows(c, layout, keep_ids, erased_ids, erased_subjects, args.slice_key)
    approximate, references = approximate_rows(c, full, manifest, erased_ids, erased_subjects, args.method_steps)
    results |= approximate
    finish_machine(info)
    report(results, info)
    write_json(args.out, {"machine": info, "params": c.params, "base": {**BASE, "n_embd": BASE["n_embd"] * args.scale,
                          "parameters": c.parameters, "pretrain_steps": args.pretrain_steps},
                          "sisa": args.sisa, "slice_key": args.slice_key, "device": str(c.device), "scale": args.scale,
                          "repeats": args.repeats,
                          "records": len(c.texts), "subjects": len(c.keys), "canaries": len(c.secrets),
                          "erased_subjects": len(erased_subjects), "references": references, "results": results})


def report(results: dict, info: dict) -> None:
    """Costs are CPU seconds over the re-fine-tune's (steadier than wall time on a shared host)."""
    reference = results["re-fine-tune"]
    ref_cpu, ref_exp = reference["cpu_seconds"], np.array(reference["exposure"])
    rows = []
    for label, r in results.items():
        exp = np.array(r["exposure"])
        before = label == "LoRA fine-tune" or label.endswith("before erasure")
        cost = None if before else r.get("one_subject_cpu_seconds", r["cpu_seconds"]) / ref_cpu
        rows.append([label, fmt(float(exp.mean()), ".2f"), fmt(float(exp.max()), ".2f"),
                     "–" if before or label == "re-fine-tune" else fmt(float(exp.mean() - ref_exp.mean()), "+.2f"),
                     f"{sum(r['emitted'])}/{len(r['emitted'])}", fmt(r["holdout_perplexity"], ".2f"),
                     fmt(cost, ".1%") if cost is not None else "–",
                     ("escalated" if r["escalated"] else "certified") if "escalated" in r else "–"])
    print()
    print(markdown_table(["model", "mean exposure (bits)", "max", "mean over re-fine-tune", "emitted",
                          "held-out ppl", "cost (CPU)", "job's verdict"], rows))
    print()
    for label, sisa in results.items():
        if "one_subject_cpu_seconds" not in sisa:
            continue
        before = results[f"{label}, before erasure"]
        counts = min(before["exposure"]) >= 10
        within = abs(np.mean(sisa["exposure"]) - ref_exp.mean()) <= 1
        cheap = sisa["one_subject_cpu_seconds"] / ref_cpu <= 1 / sisa["shards"] + 0.10
        print(f"{label} before erasure: exposure {', '.join(f'{e:.1f}' for e in before['exposure'])} bits "
              f"({', '.join(f'{e:.1f}' for e in before['exposure_own_adapter'])} under its own adapter alone): the row "
              f"{'counts' if counts else 'does NOT count'} (≥ 10 bits); within 1 bit of the re-fine-tune: "
              f"{'met' if within else 'MISSED'}; one subject at ≤ 1/S + 0.10 of its CPU: {'met' if cheap else 'MISSED'}")
    for label in ("gradient_difference (LoRA)", "npo (LoRA)"):
        r = results[label]
        gap = np.mean(r["exposure"]) - ref_exp.mean()
        met = abs(gap) <= 1 or r["escalated"]
        print(f"{label}: {gap:+.2f} bits over the re-fine-tune, {'escalated' if r['escalated'] else 'certified'} "
              f"by the job's verdicts ({', '.join(f'{k} {v}' for k, v in r['checks'].items())}): within 1 bit or "
              f"escalated: {'met' if met else 'MISSED'}")
        for reason in r["reasons"]:
            print(f"    {reason}")
    tuned = results["LoRA fine-tune"]
    print(f"throughput ({tuned.get('device', 'this device')}): training {tuned['training_tokens_per_s']:,.0f} tokens/s, "
          f"generation {tuned['generation_tokens_per_s']:,.1f} tokens/s")
    print(f"machine: {describe_machine(info)}")


if __name__ == "__main__":
    main()
