"""The work one predict, generate, score, sample or score-images call asks of an inference worker, estimated before it
is sent, and its bound: OBLIVIATE_MAX_INFERENCE_FLOPS, or OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS for an
image model's sample and score-images (one default image at 50 steps is over half the first).

A count of rows or texts alone does not bound a call: sixty texts of 16 KB through a language
model held a worker for 12.5 s, and calls reach the workers first come, first served. The
estimate is a forward pass's usual 2 × parameters × positions: the parameters from the family's
declared shapes (no torch), once per shard network of an ensemble, and the positions the network
computes (rows; every token of every scoring window; the context again for each generated token,
since generation keeps no cache; for an image model, each image once per denoising step or
scored timestep, in the parameter-positions of one pass of its U-Net).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.config import get_settings
from app.errors import Unprocessable
from app.families.builtin import image_diffusion_positions_per_image, image_score_timesteps
from app.families.registry import get_family


def parameters(loaded: dict[str, Any]) -> int | None:
    """Parameters of every network the version's prediction runs (all its shards), or None for
    a family that declares no shapes (a plugin's): such calls are bounded by count alone."""
    spec = get_family(loaded["family"])
    if spec.parameter_shapes is None:
        return None
    shape = loaded["shape"]
    config = spec.parse_params(loaded["params"])
    shapes = spec.parameter_shapes(config, shape.get("n_features", 0), shape.get("n_classes", 0))
    return sum(math.prod(dims) for dims in shapes.values()) * len(loaded["weights"])


def score_positions(texts: Sequence[str], block_size: int) -> int:
    """Positions the sliding-window scorer computes (workers/engine/families/lm_scoring.py): a
    text of up to a block in one window, a longer one in windows of a block advancing by half."""
    stride = max(1, block_size // 2)
    total = 0
    for text in texts:
        targets = len(text.encode("utf-8"))  # every byte after begin-of-text
        if targets <= block_size:
            total += max(1, targets)
        else:
            total += (1 + math.ceil((targets - block_size) / stride)) * block_size
    return total


def generate_positions(prompt: str, max_new_tokens: int, block_size: int) -> int:
    """Positions of a generation: each new token runs the network over its context again."""
    context = 1 + len(prompt.encode("utf-8"))  # begin-of-text and the prompt's bytes
    return sum(min(context + step, block_size) for step in range(max_new_tokens))


def sample_positions(loaded: dict[str, Any], n: int, steps: int) -> int:
    """Positions of drawing n images in `steps` denoising steps each. Each image comes from one
    network (a SISA model draws each from one shard), so the count is per network: divide by
    the shards that `parameters` multiplies by."""
    per_image = _image_positions(loaded)
    return math.ceil(n * steps * per_image / max(1, len(loaded["weights"])))


def samples_within(loaded: dict[str, Any], steps: int, wanted: int) -> int:
    """How many of `wanted` images one sample call may draw in `steps` steps under the bound (at
    least 1: a call over it even so is refused by `check`)."""
    count = parameters(loaded)
    if count is None:
        return wanted
    per_image = 2 * count * sample_positions(loaded, 1, steps)
    return max(1, min(wanted, get_settings().max_image_inference_flops // max(1, per_image)))


def score_image_positions(loaded: dict[str, Any], images: int) -> int:
    """Positions of scoring images at the fixed timesteps, through every network."""
    config = get_family(loaded["family"]).parse_params(loaded["params"])
    return images * len(image_score_timesteps(config)) * _image_positions(loaded)


def _image_positions(loaded: dict[str, Any]) -> int:
    return image_diffusion_positions_per_image(get_family(loaded["family"]).parse_params(loaded["params"]))


def check(loaded: dict[str, Any], positions: int, *, image: bool = False) -> None:
    """422 when the call's estimated work is over the bound (the image bound for an image model's
    sample and score-images), naming the figure and the limit."""
    count = parameters(loaded)
    if count is None:
        return
    flops = 2 * count * positions
    settings = get_settings()
    setting, limit = (("max_image_inference_flops", settings.max_image_inference_flops) if image
                      else ("max_inference_flops", settings.max_inference_flops))
    if flops > limit:
        fewer = "Ask for fewer images or denoising steps per call." if image else "Send fewer or shorter inputs per call."
        raise Unprocessable(
            f"This call needs about {flops:.3g} floating-point operations (2 × {count} parameters × {positions} "
            f"positions); one call may ask for at most {limit:.3g} (OBLIVIATE_{setting.upper()}). {fewer}",
            estimated_flops=flops, **{setting: limit},
        )
