"""The image_diffusion family: declared shapes and budget, determinism, scoring, SISA sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.families.budget import parameter_count
from app.families.registry import FamilyParamsError, get_family
from tests.images.data import TINY, blobs
from workers.engine import training
from workers.engine.families.base import ModelFamily
from workers.engine.families.image_diffusion import (
    decode_png,
    draw_shards,
    encode_png,
    ensemble_losses,
    features_to_pixels,
    mixture_weights,
    pixels_to_features,
    sample,
    sample_pngs,
    score_pngs,
)

CPU = torch.device("cpu")


def family_and_config(**params):
    spec = get_family("image_diffusion")
    return spec, spec.load_implementation(), spec.parse_params({**TINY, **params})


def train(images, seed: int = 1, **params):
    spec, family, config = family_and_config(**params)
    shape = family.shape(config, 2)
    features = torch.from_numpy(pixels_to_features(images))
    labels = torch.zeros(len(images), dtype=torch.int64)
    state = training.train_single(family, config, shape, features, labels, seed=seed, device=CPU)
    network = training.new_network(family, config, shape, seed=0)
    network.load_state_dict(state)
    return family, config, network.eval(), state


@pytest.mark.parametrize("params", [{}, {"conditional": True}, {"block_out_channels": [8, 16, 16], "layers_per_block": 2},
                                    {"channels": 3, "block_out_channels": [16]}])
def test_declared_shapes_are_the_networks(params):
    spec, family, config = family_and_config(**params)
    assert isinstance(family, ModelFamily) and spec.data_kind == "image"
    network = training.new_network(family, config, family.shape(config, 5), seed=0)
    declared = spec.parameter_shapes(config, 0, 5)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == declared
    assert parameter_count(declared) == sum(p.numel() for p in network.parameters())


def test_params_are_checked():
    spec = get_family("image_diffusion")
    with pytest.raises(FamilyParamsError):
        spec.parse_params({"image_size": 10, "block_out_channels": [8, 16, 32]})  # 10 is not divisible by 4
    with pytest.raises(FamilyParamsError):
        spec.parse_params({"unknown": 1})


def test_png_round_trip_and_size_check():
    _, _, config = family_and_config()
    images = blobs(3, seed=0)
    back = np.stack([decode_png(encode_png(image), config) for image in images])
    assert np.array_equal(back, images)
    assert np.array_equal(features_to_pixels(torch.from_numpy(pixels_to_features(images)).reshape(3, 1, 8, 8)), images)
    with pytest.raises(ValueError, match="the model takes 8×8×1"):
        decode_png(encode_png(np.zeros((4, 4, 1), dtype=np.uint8)), config)


def test_training_and_sampling_are_deterministic_under_a_seed():
    images = blobs(64, seed=1)
    _, config, first, state = train(images, seed=3)
    _, _, _, again = train(images, seed=3)
    _, _, _, other = train(images, seed=4)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not all(torch.equal(state[k], other[k]) for k in state)
    a = sample([first], config, 4, seed=7, steps=5)
    assert torch.equal(a, sample([first], config, 4, seed=7, steps=5))
    assert not torch.equal(a, sample([first], config, 4, seed=8, steps=5))
    pngs = sample_pngs([first], config, 3, seed=7, steps=5)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)


def test_trained_images_have_a_lower_denoising_loss_than_unseen_ones():
    seen, unseen = blobs(16, seed=2), np.full((16, 8, 8, 1), 0, dtype=np.uint8)
    unseen[:, ::2, ::2, 0] = 255  # a checkerboard the model never saw
    family, config, network, _ = train(seen, seed=1, epochs=30)
    scored_seen = score_pngs([network], config, [encode_png(i) for i in seen])
    scored_unseen = score_pngs([network], config, [encode_png(i) for i in unseen])
    assert np.mean(scored_seen) < np.mean(scored_unseen)
    # The scores are the family's own losses, the same under any batch composition.
    alone = ensemble_losses([network], torch.from_numpy(pixels_to_features(seen[:1])), torch.zeros(1, dtype=torch.int64))
    assert float(alone[0]) == pytest.approx(scored_seen[0], rel=1e-5)


def test_sisa_sampling_draws_each_image_from_one_shard():
    _, config, a, _ = train(blobs(32, seed=5), seed=1)
    _, _, b, _ = train(blobs(32, seed=6), seed=2)
    mixed = sample([a, b], config, 6, seed=11, steps=4)
    # An image drawn by the mixture is exactly the one its shard draws from the same start noise:
    # replace shard b by a network with other weights and the images of shard a are unchanged.
    _, _, c, _ = train(blobs(32, seed=7), seed=3)
    swapped = sample([a, c], config, 6, seed=11, steps=4)
    same = [bool(torch.equal(mixed[i], swapped[i])) for i in range(6)]
    assert any(same) and not all(same)


class Untrained(torch.nn.Module):
    """A shard an erasure emptied, standing in: any image it were asked to draw fails the test."""

    def forward(self, *args, **kwargs):
        raise AssertionError("the emptied shard drew an image")


def test_sisa_sampling_weights_each_shard_by_its_records_and_never_draws_an_emptied_one():
    _, config, a, _ = train(blobs(32, seed=5), seed=1)
    _, _, b, _ = train(blobs(32, seed=6), seed=2)
    # An emptied shard (0 records) gets weight 0, whatever its place among the shards.
    assert mixture_weights([30, 0, 10], 3).tolist() == [0.75, 0.0, 0.25]
    generator = torch.Generator().manual_seed(0)
    chosen = draw_shards(4000, 3, [30, 0, 10], generator)
    assert not (chosen == 1).any()
    assert 0.72 < float((chosen == 0).double().mean()) < 0.78  # 3 of 4 by records, not 1 of 2
    # Through `sample`: the emptied shard's network is never called, in any position.
    drawn = sample([a, Untrained(), b], config, 24, seed=11, steps=3, shard_records=[20, 0, 12])
    assert drawn.shape == (24, 1, 8, 8) and torch.isfinite(drawn).all()
    assert sample([Untrained(), a], config, 8, seed=2, steps=3, shard_records=[0, 5]).shape == (8, 1, 8, 8)
    with pytest.raises(AssertionError, match="emptied shard"):
        sample([a, Untrained()], config, 24, seed=11, steps=3)  # uniform: it gets its share
    # The counts decide the mixture: the same seed with other counts draws other shards.
    assert not torch.equal(sample([a, b], config, 8, seed=4, steps=3, shard_records=[1, 30]),
                           sample([a, b], config, 8, seed=4, steps=3, shard_records=[30, 1]))


def test_a_version_without_counts_still_samples_uniformly():
    _, config, a, _ = train(blobs(32, seed=5), seed=1)
    _, _, b, _ = train(blobs(32, seed=6), seed=2)
    legacy = sample([a, b], config, 6, seed=11, steps=4)
    # Versions written before the counts were kept: no counts, or a shard without one.
    assert torch.equal(sample([a, b], config, 6, seed=11, steps=4, shard_records=[None, None]), legacy)
    assert torch.equal(sample([a, b], config, 6, seed=11, steps=4, shard_records=[12, None]), legacy)
    for unknown in (None, [None, None], [3], [0, 0]):
        assert mixture_weights(unknown, 2) is None
    chosen = draw_shards(400, 2, None, torch.Generator().manual_seed(0))
    assert set(chosen.tolist()) == {0, 1}
    # One network draws every image, with or without a count.
    assert torch.equal(sample([a], config, 3, seed=7, steps=3, shard_records=[32]), sample([a], config, 3, seed=7, steps=3))
