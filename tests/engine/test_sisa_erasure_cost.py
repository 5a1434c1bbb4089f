"""What a SISA erasure spends besides its shards (bench/verification.py, the SISA case): the new
partition is read from the old manifest, and within one job every forward pass of the original
and of the shards the erasure left alone runs once (`training.frozen_predictions`). Both must
give exactly what the work they replace gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from app.unlearning.types import Sisa
from workers.engine import training
from workers.engine.partition import partition
from workers.engine.records import Records
from workers.engine.unlearning import job, rehearsal, verification
from tests.engine.sisa_models import SHAPE, trained_context

SISA = Sisa(shards=4, slices=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sisa_model(settings_env, tmp_path):
    settings_env(DATA_DIR=tmp_path, DEVICE="cpu")
    x, y = make_classification(n_samples=800, n_features=12, n_informative=8, n_classes=4, n_clusters_per_class=1,
                               random_state=3)
    rng = np.random.default_rng(3)
    keys = np.array([f"{k:064x}" for k in range(200)], dtype=object)[rng.integers(0, 200, len(y))]
    records = Records(record_ids=np.arange(len(y), dtype=np.int64), subject_keys=keys,
                      features=x.astype(np.float32), labels=y.astype(np.int64))
    ctx, manifest = trained_context(records, SISA)
    # Two subjects who were trained on: an erasure that touches a minority of the shards.
    trained_keys = np.unique(keys[manifest.shards >= 0])
    return rehearsal.erased(ctx, trained_keys[:2].tolist())


def test_the_new_partition_read_from_the_old_manifest_is_the_partition(sisa_model):
    ctx = sisa_model
    found = job._new_partition(ctx)
    full = partition(ctx.new_records.record_ids, ctx.new_records.subject_keys, seed=ctx.seed,
                     holdout_fraction=ctx.holdout_fraction, shards=SISA.shards, slices=SISA.slices)
    assert found.to_parquet() == full.to_parquet()
    assert not np.isin(ctx.forget_ids, found.record_ids).any()
    # A record the old manifest lacks (another lineage): partitioned from scratch.
    other = Records(record_ids=np.append(ctx.new_records.record_ids, 10_000),
                    subject_keys=np.append(ctx.new_records.subject_keys, "f" * 64),
                    features=np.vstack([ctx.new_records.features, ctx.new_records.features[:1]]),
                    labels=np.append(ctx.new_records.labels, 0))
    from dataclasses import replace

    widened = replace(ctx, new_records=other)
    assert 10_000 in job._new_partition(widened).record_ids


def test_frozen_predictions_change_no_figure_and_run_each_forward_pass_once(sisa_model, monkeypatch):
    ctx = sisa_model
    outcome = job.sisa(ctx)
    retrained = set(outcome.details["shards_retrained"])
    assert 0 < len(retrained) < SISA.shards
    plain_control = job.no_op_control(ctx)
    plain = verification.verify_outcome(ctx, outcome, ctx.old_shards)

    calls: list[int] = []
    real = ctx.family.predict_proba

    def counted(network, features):
        calls.append(id(network))
        return real(network, features)

    monkeypatch.setattr(ctx.family, "predict_proba", counted)
    with training.frozen_predictions():
        control = job.no_op_control(ctx)
        first = verification.verify_outcome(ctx, outcome, ctx.old_shards)
        passes = len(calls)
        again = verification.verify_outcome(ctx, outcome, ctx.old_shards)
    # Byte for byte the same figures and verdicts, the control's too.
    assert json.dumps(control, sort_keys=True) == json.dumps(plain_control, sort_keys=True)
    for found in (first, again):
        assert json.dumps(found.to_json(), sort_keys=True) == json.dumps(plain.to_json(), sort_keys=True)
    # The second look ran no forward pass; the control and the first look together ran each
    # distinct network (the original's shards, the retrained ones) once per set of records it
    # is asked about (forget, retain sample, holdout, the holdout's confirmation half).
    assert len(calls) == passes
    assert len(set(calls)) == SISA.shards + len(retrained)
    assert passes <= 4 * (SISA.shards + len(retrained))
    # Without the scope the same verification runs many more.
    calls.clear()
    job.no_op_control(ctx)
    verification.verify_outcome(ctx, outcome, ctx.old_shards)
    assert len(calls) > 2 * passes


def test_a_network_loaded_outside_the_scope_or_trained_is_never_memoised(sisa_model):
    ctx = sisa_model
    network = training.new_network(ctx.family, ctx.config, SHAPE, seed=1)
    x = torch.from_numpy(ctx.old_records.features[:50])
    y = torch.from_numpy(ctx.old_records.labels[:50])
    with training.frozen_predictions():
        before = training.ensemble_proba(ctx.family, [network], x)
        ctx.family.train(network, ctx.config, x, y, seed=1, epochs=3)
        after = training.ensemble_proba(ctx.family, [network], x)
        # Loaded through the scope: the same weights hash gives the same object, memoised.
        shard = ctx.old_shards[0]
        from app.artifacts.store import get_store
        from workers.engine.serialization import load_network

        load = lambda: load_network(ctx.family, ctx.config, SHAPE, get_store().get_bytes(shard.weights))  # noqa: E731
        frozen = training.frozen_network(shard.weights, load)
        assert training.frozen_network(shard.weights, load) is frozen
    assert not torch.equal(before, after)
    # Outside a scope every call loads afresh.
    assert training.frozen_network(shard.weights, load) is not frozen
