import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from tests.factories import family_and_config
from workers.engine import training
from workers.engine.families.base import Shape
from workers.engine.serialization import bytes_to_state, load_network, state_to_bytes

CPU = torch.device("cpu")
SHAPE = Shape(n_features=12, n_classes=3)


def blobs(n, seed):
    """Three Gaussian clusters in 12 dimensions: learnable, small, fast."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(3, 12))
    labels = rng.integers(0, 3, size=n)
    features = centers[labels] + rng.normal(0, 1.0, size=(n, 12))
    return torch.tensor(features, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def split_slices(features, labels, sizes):
    bounds = np.cumsum([0, *sizes])
    return [(features[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def assert_same_state(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


FAMILIES = [
    ("logistic_regression", {"epochs": 4}),
    ("mlp_classifier", {"hidden": [16], "dropout": 0.2, "epochs": 3, "batch_size": 32}),
    ("cnn_classifier", {"image_shape": [3, 2, 2], "channels": [4], "epochs": 3, "batch_size": 32}),
]


@pytest.mark.parametrize(("name", "params"), FAMILIES)
def test_training_is_bit_identical_per_seed(name, params):
    family, config = family_and_config(name, **params)
    features, labels = blobs(300, seed=1)
    run = lambda seed: training.train_single(  # noqa: E731
        family, config, SHAPE, features, labels, seed=seed, device=CPU
    )
    first = run(7)
    assert_same_state(first, run(7))
    other = run(8)
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_new_network_leaves_the_callers_rng_alone():
    family, config = family_and_config("mlp_classifier")
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    training.new_network(family, config, SHAPE, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("name", "params"), FAMILIES[:2])
def test_sisa_resume_from_a_checkpoint_equals_the_uninterrupted_run(name, params):
    family, config = family_and_config(name, **{**params, "epochs": 8})
    features, labels = blobs(240, seed=2)
    slices = split_slices(features, labels, [70, 50, 0, 60, 60])
    checkpoints = {}
    full = training.train_sisa_shard(
        family, config, SHAPE, slices, seed=4, device=CPU,
        on_checkpoint=lambda r, state: checkpoints.__setitem__(r, state),
    )
    assert sorted(checkpoints) == [0, 1, 2, 3, 4]
    assert_same_state(full, checkpoints[4])
    resumed = training.train_sisa_shard(
        family, config, SHAPE, slices, seed=4, device=CPU, start_slice=3, init_state=checkpoints[2]
    )
    assert_same_state(full, resumed)


def test_sisa_resume_after_removing_records_equals_retraining_the_shard():
    family, config = family_and_config("mlp_classifier", hidden=[16], epochs=6, batch_size=16)
    features, labels = blobs(200, seed=3)
    slices = split_slices(features, labels, [50, 50, 50, 50])
    checkpoints = {}
    training.train_sisa_shard(
        family, config, SHAPE, slices, seed=4, device=CPU,
        on_checkpoint=lambda r, state: checkpoints.__setitem__(r, state),
    )
    erased = list(slices)
    erased[2] = (slices[2][0][5:], slices[2][1][5:])
    retrained = training.train_sisa_shard(family, config, SHAPE, erased, seed=4, device=CPU)
    resumed = training.train_sisa_shard(
        family, config, SHAPE, erased, seed=4, device=CPU, start_slice=2, init_state=checkpoints[1]
    )
    assert_same_state(retrained, resumed)


def test_sisa_rejects_bad_resume_arguments():
    family, config = family_and_config("mlp_classifier")
    slices = split_slices(*blobs(20, seed=0), [10, 10])
    with pytest.raises(ValueError, match="init_state"):
        training.train_sisa_shard(family, config, SHAPE, slices, seed=0, device=CPU, start_slice=1)
    with pytest.raises(ValueError, match="outside"):
        training.train_sisa_shard(family, config, SHAPE, slices, seed=0, device=CPU, start_slice=3)
    with pytest.raises(ValueError, match="at least one slice"):
        training.train_sisa_shard(family, config, SHAPE, [], seed=0, device=CPU)


def test_sisa_ensemble_beats_chance():
    family, config = family_and_config("mlp_classifier", hidden=[16], epochs=20, learning_rate=1e-2)
    features, labels = blobs(600, seed=5)
    test_x, test_y = features[450:], labels[450:]
    networks = []
    for shard in range(3):
        part = slice(shard * 150, (shard + 1) * 150)
        slices = split_slices(features[part], labels[part], [50, 50, 50])
        state = training.train_sisa_shard(family, config, SHAPE, slices, seed=shard, device=CPU)
        network = training.new_network(family, config, SHAPE, seed=0)
        network.load_state_dict(state)
        networks.append(network)
    assert training.evaluate(family, networks, test_x, test_y)["accuracy"] > 0.9


def test_partition_shards_follow_the_subject_key():
    from workers.engine.partition import partition

    keys = [hashlib.sha256(f"subject-{i}".encode()).hexdigest() for i in range(400)]
    records = np.array([keys[i % 400] for i in range(1200)])
    record_ids = np.arange(1200)
    shards = partition(record_ids, records, seed=0, holdout_fraction=0, shards=5, slices=1).shards
    for key in keys:
        assert len(set(shards[records == key].tolist())) == 1
    assert shards[0] == int(hashlib.sha256(keys[0].encode("ascii")).hexdigest()[:16], 16) % 5
    assert np.bincount(shards, minlength=5).min() > 150
    with pytest.raises(ValueError):
        partition(record_ids, records, seed=0, holdout_fraction=0, shards=0, slices=1)


def assign_slices(record_ids, slices, seed):
    """The slices as record ids (`training.slice_positions` gives positions)."""
    ids = np.asarray(record_ids)
    return [ids[positions] for positions in training.slice_positions(ids, slices, seed)]


def test_assign_slices_partitions_deterministically():
    record_ids = list(range(1000, 1600))
    slices = assign_slices(record_ids, 4, seed=9)
    assert len(slices) == 4
    assert sorted(np.concatenate(slices).tolist()) == record_ids
    assert all(len(part) > 100 for part in slices)
    again = assign_slices(list(reversed(record_ids)), 4, seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(slices, again))
    reseeded = assign_slices(record_ids, 4, seed=10)
    assert not all(np.array_equal(a, b) for a, b in zip(slices, reseeded))


def test_removing_records_leaves_every_other_record_in_its_slice_and_order():
    record_ids = [f"rec-{i}" for i in range(500)]
    before = assign_slices(record_ids, 5, seed=1)
    removed = {before[1][3], before[1][10], before[3][0]}
    after = assign_slices([r for r in record_ids if r not in removed], 5, seed=1)
    for old, new in zip(before, after):
        assert [r for r in old if r not in removed] == new.tolist()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[2], after[2])


def test_ensemble_proba_is_the_mean_and_evaluate_reports_it():
    family, config = family_and_config("mlp_classifier")
    networks = [training.new_network(family, config, SHAPE, seed=s) for s in range(3)]
    features, labels = blobs(50, seed=6)
    proba = training.ensemble_proba(family, networks, features)
    expected = sum(family.predict_proba(n, features) for n in networks) / 3
    assert torch.allclose(proba, expected)
    report = training.evaluate(family, networks, features, labels)
    assert report["n"] == 50
    assert report["accuracy"] == pytest.approx((proba.argmax(1) == labels).float().mean().item())
    loss = -proba[torch.arange(50), labels].log().mean().item()
    assert report["loss"] == pytest.approx(loss, rel=1e-5)
    single = training.evaluate(family, networks[0], features, labels)
    assert single == training.evaluate(family, networks[:1], features, labels)
    empty = training.evaluate(family, networks, features[:0], labels[:0])
    assert empty == {"accuracy": None, "loss": None, "n": 0}


def test_device_from_setting():
    assert training.device_from_setting("cpu") == CPU
    assert training.device_from_setting("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        training.device_from_setting("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            training.device_from_setting("cuda")


@pytest.mark.parametrize(("name", "params"), FAMILIES)
def test_serialization_round_trip_keeps_predictions(name, params):
    family, config = family_and_config(name, **params)
    features, labels = blobs(100, seed=7)
    state = training.train_single(family, config, SHAPE, features, labels, seed=1, device=CPU)
    data = state_to_bytes(state, {"family": name, "seed": "1"})

    # Safetensors, not pickle: an 8-byte header length, then a JSON header.
    (header_length,) = struct.unpack("<Q", data[:8])
    assert data[8:9] == b"{"
    assert json.loads(data[8 : 8 + header_length])["__metadata__"] == {"family": name, "seed": "1"}

    restored, metadata = bytes_to_state(data)
    assert metadata == {"family": name, "seed": "1"}
    assert_same_state(state, restored)
    original = training.new_network(family, config, SHAPE, seed=0)
    original.load_state_dict(state)
    loaded = load_network(family, config, SHAPE, data)
    assert torch.equal(family.predict_proba(original, features), family.predict_proba(loaded, features))


def test_serialization_checks_metadata_and_architecture():
    family, config = family_and_config("mlp_classifier", hidden=[8])
    state = training.new_network(family, config, SHAPE, seed=0).state_dict()
    assert bytes_to_state(state_to_bytes(state))[1] == {}
    with pytest.raises(TypeError, match="str to str"):
        state_to_bytes(state, {"seed": 1})
    _, wider = family_and_config("mlp_classifier", hidden=[9])
    with pytest.raises(RuntimeError):
        load_network(family, wider, SHAPE, state_to_bytes(state))
