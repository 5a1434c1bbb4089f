"""Small image data sets for the image_diffusion tests: digit-like 8×8 strokes and creators
whose works carry a mark, built from a seed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

TINY = {"image_size": 8, "channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1,
        "num_train_timesteps": 20, "epochs": 4, "batch_size": 32, "learning_rate": 2e-3, "sample_steps": 10}


def blobs(n: int, seed: int, size: int = 8) -> npt.NDArray[np.uint8]:
    """`n` grey images [n, size, size, 1]: a bright bar at a random row or column on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), dtype=np.uint8)
    for i in range(n):
        k = int(rng.integers(1, size - 1))
        if rng.random() < 0.5:
            images[i, k, 1:-1, 0] = 255
        else:
            images[i, 1:-1, k, 0] = 255
    return images


def marked(n: int, seed: int, size: int = 8) -> npt.NDArray[np.uint8]:
    """`n` near-identical works of one creator: a checkerboard corner mark on a bar image."""
    images = blobs(n, seed, size)
    images[:, :4, :4, 0] = np.where((np.add.outer(np.arange(4), np.arange(4)) % 2) == 0, 255, 0)
    return images
