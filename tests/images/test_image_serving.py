"""The inference queue's image operations, as the worker answers them: sample and score_images."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from tests.images.data import TINY, blobs


@pytest.fixture
def stored(data_dir):
    from app.artifacts.store import get_store
    from app.families.registry import get_family
    from workers.engine import training
    from workers.engine.families.image_diffusion import pixels_to_features
    from workers.engine.serialization import state_to_bytes

    spec = get_family("image_diffusion")
    family, config = spec.load_implementation(), spec.parse_params(TINY)
    shape = family.shape(config, 2)
    images = blobs(32, seed=3)
    weights = []
    for seed in (1, 2):
        state = training.train_single(family, config, shape, torch.from_numpy(pixels_to_features(images)),
                                      torch.zeros(32, dtype=torch.int64), seed=seed, device=torch.device("cpu"))
        weights.append(get_store().put_bytes(state_to_bytes(state)))
    return {"family_name": "image_diffusion", "params": TINY,
            "shape": {"n_features": shape.n_features, "n_classes": shape.n_classes}}, weights, images


def test_sample_answers_base64_pngs_reproducibly(stored):
    from workers.inference import answer_sample

    model, weights, _ = stored
    first = answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None)
    assert len(first["images"]) == 5
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in first["images"])
    assert first == answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None)
    assert first != answer_sample(**model, weight_hashes=weights[:1], n=5, seed=4, steps=3, label=None)
    assert "error" in answer_sample(**model, weight_hashes=weights, n=1, seed=4, steps=3, label=7)


def test_sample_draws_the_shards_in_proportion_to_their_records(stored):
    from workers.inference import answer_sample

    model, weights, _ = stored
    # The second shard emptied: every image is the first shard's, as if it were the only one.
    only_first = answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None, shard_records=[32, 0])
    only_second = answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None, shard_records=[0, 32])
    alone = answer_sample(**model, weight_hashes=weights[:1], n=5, seed=4, steps=3, label=None)
    assert only_first == alone and only_second != alone
    # A version without counts (and a call from an API that sends none) samples uniformly.
    uniform = answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None)
    assert answer_sample(**model, weight_hashes=weights, n=5, seed=4, steps=3, label=None,
                         shard_records=[None, None]) == uniform


def test_score_images_answers_a_loss_per_image_and_refuses_what_it_cannot_read(stored):
    from workers.engine.families.image_diffusion import encode_png
    from workers.inference import answer_score_images

    model, weights, images = stored
    encoded = [base64.b64encode(encode_png(image)).decode() for image in images[:3]]
    answer = answer_score_images(**model, weight_hashes=weights, images=encoded, labels=None)
    assert len(answer["losses"]) == 3 and all(loss > 0 for loss in answer["losses"])
    assert answer == answer_score_images(**model, weight_hashes=weights, images=encoded, labels=[0, 0, 0])
    wrong_size = base64.b64encode(encode_png(np.zeros((4, 4, 1), dtype=np.uint8))).decode()
    assert "error" in answer_score_images(**model, weight_hashes=weights, images=[wrong_size], labels=None)
    assert "error" in answer_score_images(**model, weight_hashes=weights, images=["not base64!"], labels=None)
    assert "error" in answer_score_images(**model, weight_hashes=weights, images=encoded, labels=[0])
