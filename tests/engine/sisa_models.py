"""A small SISA MLP trained in memory, as the unlearning job would find it: the shared set-up of
the SISA erasure tests (tests/engine/test_sisa_erasure_cost.py, test_subject_slices.py)."""

from __future__ import annotations

import numpy as np

from app.families.registry import get_family
from app.unlearning.types import Sisa
from workers.engine.families.base import Shape
from workers.engine.partition import Manifest, partition
from workers.engine.records import Records
from workers.engine.shards import train_shards
from workers.engine.unlearning.context import Context

SHAPE = Shape(n_features=12, n_classes=4)
SEED = 5


def trained_context(records: Records, sisa: Sisa, *, same_lineage: bool = True) -> tuple[Context, Manifest]:
    """The unlearning context of an MLP (16 hidden units, 6 epochs) trained on `records` under
    `sisa`, holdout 20 %, seed 5, before any subject is chosen, and its manifest."""
    spec = get_family("mlp_classifier")
    family, config = spec.load_implementation(), spec.parse_params({"hidden": [16], "epochs": 6})
    manifest = partition(records.record_ids, records.subject_keys, seed=SEED, holdout_fraction=0.2,
                         shards=sisa.shards, slices=sisa.slices, slice_key=sisa.slice_key)
    trained = train_shards(family=family, config=config, shape=SHAPE, records=records, manifest=manifest, seed=SEED,
                           sisa=sisa, shard_list=list(range(sisa.shards)))
    ctx = Context(spec=spec, family=family, config=config, shape=SHAPE, seed=SEED, sisa=sisa, holdout_fraction=0.2,
                  old_records=records, new_records=records, old_manifest=manifest,
                  old_shards=tuple(trained[s] for s in range(sisa.shards)), old_state={},
                  forget_ids=np.zeros(0, dtype=np.int64), same_lineage=same_lineage)
    return ctx, manifest
