"""Unlearning an image model through the job's engine (workers/engine/unlearning/job.py): an image
dataset version stored as the contract's Parquet, a creator whose works the model memorised hidden
among others, the exact paths and the diffusion variants of the approximate methods, verified."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.images.data import blobs, marked

PARAMS = {"image_size": 8, "channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1,
          "num_train_timesteps": 20, "epochs": 8, "batch_size": 32, "learning_rate": 3e-3, "sample_steps": 4}
SEED = 5
HOLDOUT = 0.3


def version_table(creators: dict[str, np.ndarray], first_id: int = 0) -> bytes:
    """The stored form of an image dataset version (the contract): record_id, subject_key, label,
    image (PNG)."""
    from workers.engine.families.image_diffusion import encode_png

    rows = [(key, image) for key, works in creators.items() for image in works]
    table = pa.table({
        "record_id": pa.array(np.arange(first_id, first_id + len(rows)), pa.int64()),
        "subject_key": pa.array([key for key, _ in rows], pa.string()),
        "label": pa.array(np.zeros(len(rows), dtype=np.int64), pa.int64()),
        "image": pa.array([encode_png(image) for _, image in rows], pa.binary()),
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def creators() -> tuple[dict[str, np.ndarray], str]:
    """Twelve creators of plain bar images and one, trained on, whose 30 works carry a mark."""
    from workers.engine.partition import holdout_subjects

    works = {f"creator-{i:02d}": blobs(10, seed=100 + i) for i in range(12)}
    candidates = [f"marked-{i}" for i in range(20)]
    held = holdout_subjects(np.asarray(list(works) + candidates, dtype=object), HOLDOUT, SEED)
    erased = next(c for c in candidates if c not in held)
    return works | {erased: marked(30, seed=7)}, erased


@pytest.fixture(scope="module")
def model(database_url):
    return trained_model()


def trained_model():
    """The stored dataset versions before and after the erasure, and the model trained on the
    first with two references (one pair)."""
    from app.artifacts.store import get_store
    from app.families.registry import get_family
    from app.unlearning.types import ReferenceModel
    from workers import reference_training
    from workers.engine.partition import partition
    from workers.engine.records import records_and_shape
    from workers.engine.shards import train_shards

    store = get_store()
    works, erased = creators()
    old_sha = store.put_bytes(version_table(works))
    new_sha = store.put_bytes(version_table({k: v for k, v in works.items() if k != erased}))
    spec = get_family("image_diffusion")
    family, config = spec.load_implementation(), spec.parse_params(PARAMS)
    records, shape = records_and_shape(family, config, old_sha, (), 1, False)
    manifest = partition(records.record_ids, records.subject_keys, seed=SEED, holdout_fraction=HOLDOUT, shards=1,
                         slices=1)
    shards = train_shards(family=family, config=config, shape=shape, records=records, manifest=manifest, seed=SEED,
                          sisa=None, shard_list=[0])
    pool = reference_training.train_positions(family, config, shape, records, manifest.trained_ids(), seed=SEED,
                                              size=2, positions=[0, 1])
    refs = tuple(ReferenceModel(id=uuid.uuid4(), position=k, pool_size=2, membership_seed=SEED, weights=sha)
                 for k, sha in pool.items())
    return {"spec": spec, "family": family, "config": config, "shape": shape, "records": records, "old_sha": old_sha,
            "new_sha": new_sha, "manifest": manifest, "shards": (shards[0],), "references": refs, "erased": erased}


def context(model, **changes):
    from app.artifacts.store import get_store
    from workers.engine.records import records_and_shape
    from workers.engine.unlearning.context import Context

    records = model["records"]
    new_records = records_and_shape(model["family"], model["config"], model["new_sha"], (), 1, False)[0]
    erased = records.record_ids[records.subject_keys == model["erased"]]
    get_store()
    fields = dict(spec=model["spec"], family=model["family"], config=model["config"], shape=model["shape"], seed=SEED,
                  sisa=None, holdout_fraction=HOLDOUT, old_records=records, new_records=new_records,
                  old_manifest=model["manifest"], old_shards=model["shards"], old_state={},
                  forget_ids=np.intersect1d(erased, model["manifest"].trained_ids()), same_lineage=True,
                  references=model["references"], reference_pool=2)
    return Context(**(fields | changes))


def checks_of(block):
    return {c["name"]: c["verdict"] for c in block["checks"]}


def test_stored_images_load_as_pixels_in_record_order(model):
    records = model["records"]
    assert records.features.shape == (150, 64) and records.features.min() == -1.0 and records.features.max() == 1.0
    assert np.all(np.diff(records.record_ids) > 0) and set(records.labels.tolist()) == {0}


def test_the_original_gives_the_memorised_creator_away(model):
    from workers.engine.unlearning import job

    control = job.no_op_control(context(model))
    assert control["testable"] is True
    assert set(checks_of(control)) == {"mia_auc", "per_record_audit", "copies", "style"}
    assert checks_of(control)["mia_auc"] == "fail"


def test_retrain_forgets_and_its_checks_feed_the_sanity_check(model):
    from workers.engine.unlearning import job

    escalations = []
    found = job.unlearn(context(model), "retrain", escalate=escalations.append)
    assert found.method == "retrain" and not escalations
    assert found.verification.lineage_proof.in_new_manifest == 0
    verdicts = found.verification.verdicts
    assert set(checks_of(verdicts)) == {"mia_auc", "per_record_audit", "copies", "style"}
    assert verdicts["exact"] is True and verdicts["escalates"] is False
    # The exact path's sanity check: its verdicts are what the alarm reads, whatever they are.
    from workers.engine.verification import control as no_op

    assert bool(no_op.verdict_reasons(verdicts)) == (verdicts["verdict"] != "pass")
    assert found.verification.after.forget.loss > found.verification.before.forget.loss


@pytest.mark.parametrize("method", ["gradient_difference", "salun"])
def test_an_approximate_diffusion_method_is_verified_or_escalated(model, method):
    from workers.engine.unlearning import job

    escalations = []
    found = job.unlearn(context(model), method, escalate=escalations.append, settings={"steps": 30})
    assert found.requested_method == method and found.settings["steps"] == 30
    if escalations:
        assert found.method == "retrain" and escalations[0].from_method == method and escalations[0].reasons
    else:
        assert found.method == method and found.verification.verdicts["verdict"] == "pass"
    assert found.verification.after.forget.loss > found.verification.before.forget.loss


def test_a_tabular_only_method_is_refused_for_an_image_model(model):
    from workers.engine.unlearning import job
    from workers.engine.unlearning.base import UnknownMethodError

    with pytest.raises(UnknownMethodError, match="unknown unlearning method 'neggrad_plus'"):
        job.run_method(context(model), "neggrad_plus")


def test_sisa_retrains_the_shard_of_the_erased_creator_and_samples_the_mixture(model):
    from app.unlearning.types import Sisa
    from workers.engine.partition import partition
    from workers.engine.serialization import load_network
    from workers.engine.shards import train_shards
    from workers.engine.unlearning import job
    from workers.engine.families.image_diffusion import sample
    from app.artifacts.store import get_store

    sisa = Sisa(shards=2, slices=2)
    records = model["records"]
    manifest = partition(records.record_ids, records.subject_keys, seed=SEED, holdout_fraction=HOLDOUT, shards=2,
                         slices=2)
    trained = train_shards(family=model["family"], config=model["config"], shape=model["shape"], records=records,
                           manifest=manifest, seed=SEED, sisa=sisa, shard_list=[0, 1])
    ctx = context(model, sisa=sisa, old_manifest=manifest, old_shards=(trained[0], trained[1]), references=(),
                  reference_pool=0)
    found = job.unlearn(ctx, "sisa", escalate=lambda e: None)
    assert found.method == "sisa" and len(found.details["shards_retrained"]) == 1
    kept = 1 - found.details["shards_retrained"][0]
    assert found.shards[kept].weights == trained[kept].weights
    assert checks_of(found.verification.verdicts)["per_record_audit"] in {"pass", "inconclusive", "fail"}
    assert found.verification.verdicts["reference"] == "shards"
    networks = [load_network(model["family"], model["config"], model["shape"], get_store().get_bytes(s.weights))
                for s in found.shards]
    assert sample(networks, model["config"], 4, seed=1, steps=3).shape == (4, 1, 8, 8)


def test_an_erasure_that_empties_a_shard_leaves_it_out_of_the_samples(model):
    from app.artifacts.store import get_store
    from app.lineage.sharding import shard_of
    from app.unlearning.types import Shard, Sisa
    from workers.engine.families.image_diffusion import sample
    from workers.engine.partition import partition
    from workers.engine.serialization import load_network
    from workers.engine.shards import train_shards
    from workers.engine.unlearning import job

    records, erased = model["records"], model["erased"]
    trained_keys = set(records.subject_keys[np.isin(records.record_ids, model["manifest"].trained_ids())].tolist())
    others = trained_keys - {erased}
    # The fewest shards that put the erased creator alone in its shard.
    count = next(s for s in range(2, 64) if all(shard_of(k, s) != shard_of(erased, s) for k in others))
    emptied = shard_of(erased, count)
    sisa = Sisa(shards=count, slices=1)
    manifest = partition(records.record_ids, records.subject_keys, seed=SEED, holdout_fraction=HOLDOUT, shards=count,
                         slices=1)
    trained = train_shards(family=model["family"], config=model["config"], shape=model["shape"], records=records,
                           manifest=manifest, seed=SEED, sisa=sisa, shard_list=list(range(count)))
    # Training writes each shard's records with the version.
    assert [trained[s].records for s in range(count)] == [manifest.shard_records(s) for s in range(count)]
    assert trained[emptied].records == 30 and sum(trained[s].records for s in range(count)) == len(manifest.trained_ids())

    # A version written before the counts were kept: the erasure writes them all.
    legacy = tuple(Shard(s, trained[s].weights, trained[s].checkpoints) for s in range(count))
    ctx = context(model, sisa=sisa, old_manifest=manifest, old_shards=legacy, references=(), reference_pool=0)
    found = job.run_method(ctx, "sisa")
    assert found.details["shards_retrained"] == [emptied]
    assert found.shards[emptied].records == 0
    assert [s.records for s in found.shards] == [trained[s].records if s != emptied else 0 for s in range(count)]
    assert Shard.from_json(found.shards[emptied].to_json()).records == 0

    networks = [load_network(model["family"], model["config"], model["shape"], get_store().get_bytes(s.weights))
                for s in found.shards]
    records_after = [s.records for s in found.shards]

    def forbidden(*args, **kwargs):
        raise AssertionError("the emptied shard drew an image")

    networks[emptied].forward = forbidden  # an untrained network: any image it drew would be noise
    drawn = sample(networks, model["config"], 64, seed=3, steps=2, shard_records=records_after)
    assert drawn.shape == (64, 1, 8, 8)
    with pytest.raises(AssertionError, match="emptied shard"):
        sample(networks, model["config"], 64, seed=3, steps=2)  # without the counts: uniform, its share drawn
