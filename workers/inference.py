"""Loading stored weights for prediction and import checks, with a small cache of networks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from app.artifacts.store import get_store
from app.families.registry import get_family
from workers.engine.families.base import Shape
from workers.engine.serialization import load_network
from workers.engine.training import ensemble_proba

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
    networks = [load_network(family, config, Shape(**shape), store.get_bytes(sha)) for sha in weight_hashes]
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


def check_weights(family_name: str, params: dict, shape: dict, data: bytes) -> None:
    """Raise ValueError unless `data` is safetensors that fits this family's network."""
    spec = get_family(family_name)
    try:
        load_network(spec.load_implementation(), spec.parse_params(params), Shape(**shape), data)
    except Exception as exc:  # safetensors and torch raise several types for a bad file
        raise ValueError(f"the weights do not fit a {family_name} network with these params: {type(exc).__name__}") from None
