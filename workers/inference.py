"""Predictions on the inference queue: stored weights, loaded once per set of sha256 digests into a
small in-process cache of networks."""

from __future__ import annotations

import base64
import math
import threading
from collections import OrderedDict
from typing import Any

import torch

from app.artifacts.store import get_store
from app.config import get_settings
from app.families.registry import get_family
from workers.engine.families.base import Shape
from workers.engine.serialization import load_network
from workers.engine.training import device_from_setting, ensemble_proba

_CACHE: OrderedDict[str, tuple[Any, list]] = OrderedDict()
_LOCK = threading.Lock()
_CACHE_SIZE = 8


def networks_for(family_name: str, params: dict, shape: dict, weight_hashes: list[str]):
    key = "|".join([family_name, *weight_hashes])
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    spec = get_family(family_name)
    family = spec.load_implementation()
    config = spec.parse_params(params)
    store = get_store()
    # OBLIVIATE_DEVICE as for training: `auto` serves on a GPU when there is one.
    device = device_from_setting(get_settings().device)
    networks = [load_network(family, config, Shape(**shape), store.get_bytes(sha)).to(device) for sha in weight_hashes]
    with _LOCK:
        _CACHE[key] = (family, networks)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return family, networks


def predict(family_name: str, params: dict, shape: dict, weight_hashes: list[str], rows: list[list[float]]) -> list[list[float]]:
    family, networks = networks_for(family_name, params, shape, weight_hashes)
    features = torch.tensor(rows, dtype=torch.float32)
    with torch.no_grad():
        return ensemble_proba(family, networks, features).tolist()


def _misfit(family_name: str, params: dict, shape: dict, weight_hashes: list[str]) -> dict | None:
    try:
        networks_for(family_name, params, shape, weight_hashes)
    except (ValueError, RuntimeError) as exc:  # torch's load_state_dict raises RuntimeError for a misfit
        return {"error": f"the weights do not fit a {family_name} network with these params ({type(exc).__name__})"}
    return None


def answer(family_name: str, params: dict, shape: dict, weight_hashes: list[str], rows: list[list[float]]) -> dict:
    """The task's answer as plain JSON: {"probabilities": [[...]]} with None for a value that is
    not finite (JSON has no NaN), or {"error": why} for weights that do not fit their family."""
    misfit = _misfit(family_name, params, shape, weight_hashes)
    if misfit:
        return misfit
    probabilities = predict(family_name, params, shape, weight_hashes, rows)
    return {"probabilities": [[p if math.isfinite(p) else None for p in row] for row in probabilities]}


def answer_generate(family_name: str, params: dict, shape: dict, weight_hashes: list[str], prompt: str,
                    max_new_tokens: int, temperature: float, seed: int) -> dict:
    from workers.engine.families.lm_scoring import generate

    misfit = _misfit(family_name, params, shape, weight_hashes)
    if misfit:
        return misfit
    _family, networks = networks_for(family_name, params, shape, weight_hashes)
    block_size = int(params["block_size"])
    return {"text": generate(networks, prompt, max_new_tokens, block_size, temperature=temperature, seed=seed)}


def answer_score(family_name: str, params: dict, shape: dict, weight_hashes: list[str], texts: list[str]) -> dict:
    from workers.engine.families.lm_scoring import score

    misfit = _misfit(family_name, params, shape, weight_hashes)
    if misfit:
        return misfit
    _family, networks = networks_for(family_name, params, shape, weight_hashes)
    scores = score(networks, texts, int(params["block_size"]))
    # A log-likelihood is finite for any text (every byte has probability > 0), short of a
    # network that overflowed; JSON has no -inf, so such a score is None.
    return {"scores": [{**s, "log_likelihood": s["log_likelihood"] if math.isfinite(s["log_likelihood"]) else None}
                       for s in scores]}


def answer_sample(family_name: str, params: dict, shape: dict, weight_hashes: list[str], n: int, seed: int,
                  steps: int | None, label: int | None, shard_records: list[int | None] | None = None) -> dict:
    """{"images": [base64 PNG]}: `n` images of an image model (one network, or SISA shards each
    drawing its share, in proportion to `shard_records`, the shards' training records kept with
    the version; uniformly without them), `steps` denoising steps (None: the model's sample_steps)."""
    from workers.engine.families.image_diffusion import sample_pngs

    misfit = _misfit(family_name, params, shape, weight_hashes)
    if misfit:
        return misfit
    _family, networks = networks_for(family_name, params, shape, weight_hashes)
    config = get_family(family_name).parse_params(params)
    if label is not None and not 0 <= label < int(shape["n_classes"]):
        return {"error": f"label must be between 0 and {int(shape['n_classes']) - 1}"}
    pngs = sample_pngs(networks, config, n, seed=seed, steps=steps, label=label, shard_records=shard_records)
    return {"images": [base64.b64encode(png).decode("ascii") for png in pngs]}


def answer_score_images(family_name: str, params: dict, shape: dict, weight_hashes: list[str], images: list[str],
                        labels: list[int] | None) -> dict:
    """{"losses": [...]}: each image's denoising loss at fixed timesteps (lower: the model denoises
    it better, the membership signal of diffusion models), or {"error": why} for weights that do
    not fit or images that are not PNG/JPEG of the model's size."""
    from workers.engine.families.image_diffusion import score_pngs

    misfit = _misfit(family_name, params, shape, weight_hashes)
    if misfit:
        return misfit
    _family, networks = networks_for(family_name, params, shape, weight_hashes)
    config = get_family(family_name).parse_params(params)
    if labels is not None and (len(labels) != len(images) or any(not 0 <= v < int(shape["n_classes"]) for v in labels)):
        return {"error": "labels must give one valid label per image"}
    try:
        decoded = [base64.b64decode(image, validate=True) for image in images]
        losses = score_pngs(networks, config, decoded, labels)
    except (ValueError, OSError) as exc:  # binascii.Error is a ValueError, PIL's UnidentifiedImageError an OSError
        return {"error": f"an image could not be scored ({type(exc).__name__})"}
    return {"losses": [loss if math.isfinite(loss) else None for loss in losses]}
