"""Training the networks of a model version, one or SISA shards, with every artifact stored.

Shared by the training job and the unlearning job's exact methods (retrain, sisa)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from app.artifacts.store import get_store
from app.config import get_settings
from app.unlearning.types import Shard, Sisa
from workers.engine.families.base import ModelFamily, Shape
from workers.engine.partition import Manifest
from workers.engine.records import Records
from workers.engine.serialization import state_to_bytes
from workers.engine.training import StateDict, derive_seed, device_from_setting, train_single, train_sisa_shard

# Called with (fraction done in [0, 1], what is being trained).
Progress = Callable[[float, str], None]
# shard → (first slice to train, the checkpoint state before it or None, the shard's checkpoint hashes)
Resume = dict[int, tuple[int, StateDict | None, Sequence[str]]]


def shard_seed(seed: int, shard: int, sisa: bool) -> int:
    return derive_seed(seed, "shard", shard) if sisa else seed


def train_shards(
    *, family: ModelFamily, config: object, shape: Shape, records: Records, manifest: Manifest, seed: int,
    sisa: Sisa | None, shard_list: list[int], resume: Resume | None = None, progress: Progress | None = None,
    label: str = "",
) -> dict[int, Shard]:
    """Train the given shards, each from scratch or from `resume[shard]`. Returns shard → its
    `Shard` (weights, checkpoints and the records the manifest gives it), every artifact stored."""
    store = get_store()
    device = device_from_setting(get_settings().device)
    resume = resume or {}
    n_slices = sisa.slices if sisa else 1
    total_steps = max(1, sum(n_slices - resume.get(s, (0, None, []))[0] for s in shard_list))
    done = 0
    out: dict[int, Shard] = {}
    for shard in shard_list:
        start, init_state, kept = resume.get(shard, (0, None, []))
        checkpoints = list(kept[:start])
        if sisa:
            slices = [records.rows_for(manifest.slice_ids(shard, r)) for r in range(n_slices)]

            def on_checkpoint(r: int, state: StateDict, shard: int = shard, sisa: Sisa = sisa) -> None:
                nonlocal done
                checkpoints.append(store.put_bytes(state_to_bytes(state, {"shard": str(shard), "slice": str(r)})))
                done += 1
                if progress:
                    progress(done / total_steps, f"{label}shard {shard + 1}/{sisa.shards}, slice {r + 1}/{n_slices}")

            state = train_sisa_shard(
                family, config, shape, slices, seed=shard_seed(seed, shard, True), device=device,
                start_slice=start, init_state=init_state, on_checkpoint=on_checkpoint, n_shards=sisa.shards,
            )
        else:
            features, labels = records.rows_for(manifest.slice_ids(0, 0))
            state = train_single(family, config, shape, features, labels, seed=seed, device=device, init_state=init_state)
            done += 1
            if progress:
                progress(done / total_steps, f"{label}network trained")
        weights = store.put_bytes(state_to_bytes(state, {"shard": str(shard)}))
        out[shard] = Shard(shard=shard, weights=weights, checkpoints=tuple(checkpoints),
                           records=manifest.shard_records(shard))
    return out


def counted(shards: Sequence[Shard], manifest: Manifest) -> tuple[Shard, ...]:
    """The shards with the records `manifest` gives each: a version's counts follow its own
    manifest, including the shards an erasure kept (whose records are unchanged) and versions
    written before counts were kept."""
    return tuple(replace(shard, records=manifest.shard_records(shard.shard)) for shard in shards)
