"""SISA slices cut by subject key (new models) next to slices cut by record id (every model
trained before): a subject's records share one slice, removing records moves or reorders no other
record in either layout, an erasure of a subject-sliced model retrains its shard only from the
subject's slice and still gives exactly the weights of training without the subject, and a
stored model without the `slice_key` field keeps its record layout."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.datasets import make_classification

from app.unlearning.types import Sisa
from workers.engine import training
from workers.engine.partition import partition
from workers.engine.records import Records
from workers.engine.shards import train_shards
from workers.engine.unlearning import job, rehearsal
from workers.engine.unlearning.context import Context
from tests.engine.sisa_models import SHAPE, trained_context


def keys_of(n_subjects: int) -> list[str]:
    return [hashlib.sha256(f"subject-{i}".encode()).hexdigest() for i in range(n_subjects)]


def subject_slices(record_ids, subject_keys, slices, seed):
    ids = np.asarray(record_ids)
    return [ids[p] for p in training.slice_positions(ids, slices, seed, np.asarray(subject_keys))]


def test_a_subjects_records_share_one_slice_and_the_slices_stay_balanced():
    keys = keys_of(300)
    owners = np.array([keys[i % 300] for i in range(1200)])
    ids = np.arange(5000, 6200)
    slices = subject_slices(ids, owners, 4, seed=9)
    assert sorted(np.concatenate(slices).tolist()) == ids.tolist()
    slice_of = {int(r): k for k, part in enumerate(slices) for r in part}
    for key in keys:
        assert len({slice_of[int(r)] for r in ids[owners == key]}) == 1
    assert min(len(part) for part in slices) > 200
    # The same records in any order give the same slices; another seed, other slices.
    order = np.random.default_rng(0).permutation(len(ids))
    again = subject_slices(ids[order], owners[order], 4, seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(slices, again))
    assert not all(np.array_equal(a, b) for a, b in zip(slices, subject_slices(ids, owners, 4, seed=10)))
    # The record layout spreads a subject over several slices (what the subject layout avoids).
    by_record = [ids[p] for p in training.slice_positions(ids, 4, seed=9)]
    record_slice = {int(r): k for k, part in enumerate(by_record) for r in part}
    assert any(len({record_slice[int(r)] for r in ids[owners == key]}) > 1 for key in keys)
    with pytest.raises(ValueError, match="subject key"):
        training.slice_positions(ids, 4, 9, owners[:-1])


def test_removing_subjects_or_records_leaves_every_other_record_in_its_slice_and_order():
    keys = keys_of(120)
    owners = np.array([keys[(i * 7) % 120] for i in range(600)])
    ids = np.array([f"rec-{i}" for i in range(600)])
    before = subject_slices(ids, owners, 5, seed=1)
    # A whole subject, and one record of another subject.
    gone = set(ids[owners == keys[3]].tolist()) | {ids[owners == keys[40]][0]}
    keep = np.array([r not in gone for r in ids.tolist()])
    after = subject_slices(ids[keep], owners[keep], 5, seed=1)
    touched = {k for k, part in enumerate(before) if gone & set(part.tolist())}
    assert touched and len(touched) < 5
    for k, (old, new) in enumerate(zip(before, after)):
        assert [r for r in old.tolist() if r not in gone] == new.tolist()
        if k not in touched:
            assert np.array_equal(old, new)


def test_partition_by_subject_keeps_shards_and_holdout_and_the_default_stays_by_record():
    keys = keys_of(400)
    owners = np.array([keys[i % 400] for i in range(1600)], dtype=object)
    ids = np.arange(1600, dtype=np.int64)
    by_subject = partition(ids, owners, seed=2, holdout_fraction=0.2, shards=5, slices=3, slice_key="subject")
    by_record = partition(ids, owners, seed=2, holdout_fraction=0.2, shards=5, slices=3, slice_key="record")
    default = partition(ids, owners, seed=2, holdout_fraction=0.2, shards=5, slices=3)
    # Shards and holdout do not depend on the slice layout; the default is the record layout.
    assert np.array_equal(by_subject.shards, by_record.shards)
    assert default.to_parquet() == by_record.to_parquet()
    assert np.array_equal(by_subject.slices == -1, by_record.slices == -1)
    for key in keys[:50]:
        assert len(set(by_subject.slices[owners == key].tolist())) == 1
    assert not np.array_equal(by_subject.slices, by_record.slices)
    with pytest.raises(ValueError, match="slice key"):
        partition(ids, owners, seed=2, holdout_fraction=0.2, shards=5, slices=3, slice_key="row")


def test_a_stored_sisa_block_without_slice_key_reads_as_the_record_layout():
    old = Sisa.from_json({"shards": 4, "slices": 3})
    assert old == Sisa(4, 3, "record") and old.to_json() == {"shards": 4, "slices": 3}
    new = Sisa.from_json({"shards": 4, "slices": 3, "slice_key": "subject"})
    assert new is not None and new.slice_key == "subject"
    assert new.to_json() == {"shards": 4, "slices": 3, "slice_key": "subject"}
    with pytest.raises(ValueError):
        Sisa(4, 3, "row")


def test_the_api_records_the_subject_layout_for_a_new_model_unless_asked_otherwise():
    from app.models.schemas import SisaSpec

    assert SisaSpec(shards=4, slices=3).model_dump() == {"shards": 4, "slices": 3, "slice_key": "subject"}
    assert SisaSpec(shards=4, slices=3, slice_key="record").model_dump()["slice_key"] == "record"


def sisa_context(sisa: Sisa, *, same_lineage: bool = True) -> tuple[Context, list[str]]:
    x, y = make_classification(n_samples=720, n_features=12, n_informative=8, n_classes=4, n_clusters_per_class=1,
                               random_state=4)
    keys = np.array(keys_of(180), dtype=object)[np.arange(len(y)) % 180]
    records = Records(record_ids=np.arange(len(y), dtype=np.int64), subject_keys=keys,
                      features=x.astype(np.float32), labels=y.astype(np.int64))
    ctx, manifest = trained_context(records, sisa, same_lineage=same_lineage)
    # Trained subjects whose slice is not the first: a resume from a checkpoint.
    trained_keys = sorted(set(keys[manifest.shards >= 0].tolist()))
    later = [k for k in trained_keys if manifest.slices[keys == k][0] > 0]
    return ctx, later


@pytest.mark.usefixtures("one_torch_thread")
def test_a_subject_sliced_erasure_retrains_from_the_subjects_slice_and_is_exact(settings_env, tmp_path):
    settings_env(DATA_DIR=tmp_path, DEVICE="cpu")
    sisa = Sisa(shards=3, slices=3, slice_key="subject")
    ctx, later = sisa_context(sisa)
    chosen = later[:2]
    erased = rehearsal.erased(ctx, chosen)
    outcome = job.sisa(erased)
    # Each touched shard resumes at the first slice of the erased subjects in it.
    expected: dict[int, int] = {}
    for key in chosen:
        rows = ctx.old_records.subject_keys == key
        shard, slice_index = int(ctx.old_manifest.shards[rows][0]), int(ctx.old_manifest.slices[rows][0])
        expected[shard] = min(slice_index, expected.get(shard, slice_index))
    assert outcome.details["from_slice"] == {str(s): k for s, k in expected.items()}
    assert all(k > 0 for k in expected.values())
    assert outcome.details["slices_retrained"] == sum(sisa.slices - k for k in expected.values())
    # Exact: the same weights as training every shard from scratch without the subjects.
    fresh = partition(erased.new_records.record_ids, erased.new_records.subject_keys, seed=5, holdout_fraction=0.2,
                      shards=sisa.shards, slices=sisa.slices, slice_key="subject")
    assert outcome.manifest.to_parquet() == fresh.to_parquet()
    scratch = train_shards(family=ctx.family, config=ctx.config, shape=SHAPE, records=erased.new_records,
                           manifest=fresh, seed=5, sisa=sisa, shard_list=list(range(sisa.shards)))
    assert [s.weights for s in outcome.shards] == [scratch[s].weights for s in range(sisa.shards)]


@pytest.mark.usefixtures("one_torch_thread")
def test_an_old_record_sliced_model_is_partitioned_again_by_record(settings_env, tmp_path):
    settings_env(DATA_DIR=tmp_path, DEVICE="cpu")
    # A model stored before the field existed: its version's sisa block has no slice_key.
    sisa = Sisa.from_json({"shards": 3, "slices": 3})
    assert sisa is not None
    ctx, _ = sisa_context(sisa, same_lineage=False)
    # Partitioned from scratch (another lineage), it keeps the slices its manifest has.
    assert job._new_partition(ctx).to_parquet() == ctx.old_manifest.to_parquet()


@pytest.mark.usefixtures("one_torch_thread")
def test_the_forget_records_shards_are_read_from_a_stored_manifest(settings_env, tmp_path):
    from dataclasses import replace

    from app.lineage.manifest import Manifest
    from workers.engine.unlearning import verification

    settings_env(DATA_DIR=tmp_path, DEVICE="cpu")
    sisa = Sisa(shards=3, slices=3, slice_key="subject")
    ctx, later = sisa_context(sisa)
    # As a job reads it: back from Parquet, ordered by shard and slice rather than by record id.
    stored = Manifest.from_parquet(ctx.old_manifest.to_parquet())
    assert not np.all(np.diff(stored.record_ids) > 0)
    erased = rehearsal.erased(replace(ctx, old_manifest=stored), later[:3])
    _, shards = verification._subjects_and_shards(erased, np.sort(erased.forget_ids))
    shard_of = dict(zip(ctx.old_manifest.record_ids.tolist(), ctx.old_manifest.shards.tolist()))
    assert shards is not None and shards.tolist() == [shard_of[i] for i in np.sort(erased.forget_ids).tolist()]
    # The whole erasure runs on it, its verification included.
    escalations: list = []
    version = job.unlearn(erased, "sisa", escalate=escalations.append)
    assert version.method == "sisa" and not escalations
