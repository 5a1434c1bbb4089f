"""Training orchestration: single networks, SISA shards, data partitioning and evaluation.

Everything here is deterministic under a seed on CPU. Randomness never comes from the global
RNG of the caller: network initialisation runs under a forked RNG, and every stream of random
numbers (initialisation, batch order, dropout, loss perturbation) is seeded from the model's
seed, so an exact retrain reproduces the original weights bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workers.engine.families.base import ModelFamily, Shape

StateDict = dict[str, torch.Tensor]


def set_determinism(*, single_thread: bool = False) -> None:
    """Ask torch for deterministic kernels; warn (not fail) where none exists.

    One intra-op thread makes CPU reductions independent of the machine's core count, which
    matters when weights trained on one worker are compared with a retrain on another.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    if single_thread:
        torch.set_num_threads(1)


def device_from_setting(name: str) -> torch.device:
    """Turn the configured device name ("auto", "cpu" or "cuda[:i]") into a torch.device."""
    setting = name.strip().lower()
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was requested but CUDA is not available here")
        return torch.device(setting)
    raise ValueError(f"unknown device setting {name!r}; expected 'auto', 'cpu' or 'cuda'")


def derive_seed(seed: int, *labels: object) -> int:
    """An independent 63-bit seed for a named purpose, so streams drawn from one model seed
    (per slice, per use) do not share random numbers."""
    text = ":".join([str(seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def slice_seed(seed: int, slice_index: int) -> int:
    """Seed passed to `family.train` for SISA slice `slice_index` of a shard trained with `seed`."""
    return derive_seed(seed, "slice", slice_index)


def slice_epochs(config: Any, n_slices: int, n_shards: int = 1) -> int:
    """Epochs per slice, so that a shard's total effort is about config.epochs.

    A family that counts optimiser steps instead (causal_lm: config.steps) gives each of the S
    shards 1/S of the steps: a shard holds about 1/S of the records, so it sees them as often
    as one network trained on all of them would, and the whole ensemble costs one network."""
    if hasattr(config, "epochs"):
        return max(1, round(config.epochs / n_slices))
    return max(1, round(config.steps / (n_shards * n_slices)))


def rng_devices(device: torch.device) -> list[int]:
    """CUDA devices whose RNG must be forked alongside the CPU one (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def network_device(network: nn.Module) -> torch.device:
    for parameter in network.parameters():
        return parameter.device
    return torch.device("cpu")


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters training and unlearning update: all of them, unless the network names its
    own (a LoRA network: its adapters, over a frozen base)."""
    own = getattr(network, "trainable_parameters", None)
    return list(own()) if callable(own) else list(network.parameters())


def copy_state(network: nn.Module) -> StateDict:
    """A CPU snapshot of the weights that later training cannot change."""
    return {name: value.detach().to("cpu", copy=True) for name, value in network.state_dict().items()}


# Helpers shared by the built-in families.


def fit_minibatches(
    network: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
) -> None:
    """Adam on shuffled mini-batches of mean cross-entropy, in place."""
    device = network_device(network)
    features, labels = features.to(device), labels.to(device)
    n = features.shape[0]
    if n == 0:
        return
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    # The batch order has its own generator; the forked, seeded global RNG only feeds dropout.
    order_generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(derive_seed(seed, "dropout"))
        network.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=order_generator).to(device)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(network(features[batch]), labels[batch])
                loss.backward()
                optimizer.step()
    network.eval()


def softmax_proba(network: nn.Module, features: torch.Tensor) -> torch.Tensor:
    # A network already wholly in eval mode (every loaded one) is left as it is: eval() and
    # train(False) would set each module's flag to what it already is, at a cost per module.
    toggled = any(module.training for module in network.modules())
    was_training = network.training
    if toggled:
        network.eval()
    with torch.no_grad():
        proba = torch.softmax(network(features.to(network_device(network))), dim=1)
    if toggled:
        network.train(was_training)
    return proba


def cross_entropy_per_example(
    network: nn.Module, features: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    was_training = network.training
    network.eval()
    device = network_device(network)
    with torch.no_grad():
        losses = F.cross_entropy(network(features.to(device)), labels.to(device), reduction="none")
    network.train(was_training)
    return losses


# Training.


def new_network(family: ModelFamily, config: Any, shape: Shape, seed: int) -> nn.Module:
    """A freshly initialised network; the caller's global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return family.build_network(config, shape)


def _prepare(
    family: ModelFamily,
    config: Any,
    shape: Shape,
    seed: int,
    device: torch.device,
    init_state: StateDict | None,
) -> nn.Module:
    network = new_network(family, config, shape, seed)
    if init_state is not None:
        network.load_state_dict(init_state, strict=True)
    return network.to(device)


def train_single(
    family: ModelFamily,
    config: Any,
    shape: Shape,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int,
    device: torch.device,
    init_state: StateDict | None = None,
) -> StateDict:
    """Train one network on all records; returns its weights on CPU.

    `seed` reaches `family.train` unchanged, so for logistic regression
    `perturbation_vector(network, config, seed)` regenerates the loss perturbation.
    """
    network = _prepare(family, config, shape, seed, device, init_state)
    family.train(network, config, features.to(device), labels.to(device), seed=seed)
    return copy_state(network)


def train_sisa_shard(
    family: ModelFamily,
    config: Any,
    shape: Shape,
    slices: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int,
    device: torch.device,
    start_slice: int = 0,
    init_state: StateDict | None = None,
    on_checkpoint: Callable[[int, StateDict], None] | None = None,
    n_shards: int = 1,
) -> StateDict:
    """Train one SISA shard slice by slice (Bourtoule et al. 2021); returns the final weights.

    At slice r the network, continuing from the checkpoint after slice r-1, trains on the union
    of slices 0..r for `slice_epochs(config, R, n_shards)` epochs with seed `slice_seed(seed, r)`; then
    `on_checkpoint(r, weights)` is called. Each slice depends only on the previous checkpoint
    and its own seed, so `start_slice=k` with `init_state` = checkpoint after slice k-1 gives
    exactly the result of an uninterrupted run over the same slices. This is what lets an
    erasure retrain a shard from the checkpoint before its first affected slice.
    """
    n_slices = len(slices)
    if n_slices == 0:
        raise ValueError("a SISA shard needs at least one slice")
    if not 0 <= start_slice <= n_slices:
        raise ValueError(f"start_slice {start_slice} is outside 0..{n_slices}")
    if start_slice > 0 and init_state is None:
        raise ValueError("resuming a shard after slice 0 needs the checkpoint as init_state")
    network = _prepare(family, config, shape, seed, device, init_state)
    epochs = slice_epochs(config, n_slices, n_shards)
    for r in range(start_slice, n_slices):
        union_features = torch.cat([features for features, _ in slices[: r + 1]]).to(device)
        union_labels = torch.cat([labels for _, labels in slices[: r + 1]]).to(device)
        family.train(
            network, config, union_features, union_labels, seed=slice_seed(seed, r), epochs=epochs
        )
        if on_checkpoint is not None:
            on_checkpoint(r, copy_state(network))
    return copy_state(network)


# Partitioning.


def _digest64(text: str) -> int:
    # Subject keys are hex, where UTF-8 and ASCII agree; record ids may be any text.
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16)


def slice_positions(record_ids: Sequence[Any] | np.ndarray, slices: int, seed: int,
                    subject_keys: Sequence[Any] | np.ndarray | None = None) -> list[np.ndarray]:
    """Split one shard's record ids into `slices` slices, each in a fixed order, as positions
    into `record_ids`: slice r is `record_ids[positions[r]]`.

    A record's slice and its position in the order depend only on (seed, record id): the
    records are ordered by a 64-bit hash and slice r holds the hashes in [r, r+1)·2⁶⁴/R. So
    removing records never moves the others between slices nor reorders them; every slice
    without removals keeps exactly its records, and the checkpoints before the first affected
    slice stay valid. The price is that slice sizes are balanced only in expectation.

    With `subject_keys` (one per record) the slice is chosen by a 64-bit hash of (seed, the
    record's subject key) instead, so all of a subject's records share one slice and erasing the
    subject invalidates only the checkpoints from that slice on; within a slice the order is
    still that of the record hashes. A record's slice and position then depend only on (seed,
    its subject key, its id), and removing records again moves and reorders no other record.
    """
    if slices < 1:
        raise ValueError("slices must be at least 1")
    ids = np.asarray(record_ids)
    hashes = [_digest64(f"{seed}:{record_id}") for record_id in ids.tolist()]
    order = sorted(range(len(hashes)), key=lambda i: (hashes[i], str(ids[i])))
    if subject_keys is None:
        chosen = hashes
    else:
        keys = np.asarray(subject_keys)
        if keys.shape[0] != ids.shape[0]:
            raise ValueError("every record needs its subject key")
        by_key = {key: _digest64(f"slice:{seed}:{key}") for key in set(keys.tolist())}
        chosen = [by_key[key] for key in keys.tolist()]
    members: list[list[int]] = [[] for _ in range(slices)]
    for i in order:
        members[(chosen[i] * slices) >> 64].append(i)
    return [np.asarray(indices, dtype=np.int64) for indices in members]


# Prediction and evaluation.


# Probabilities kept per frozen network within one `frozen_predictions` scope, in bytes at most.
MEMO_BYTES = 256 * 2**20


@dataclass
class _Memo:
    """The networks of one scope that nothing trains (by stored weights hash, held so their ids
    stay theirs) and their class probabilities per set of features."""

    loaded: dict[str, nn.Module] = field(default_factory=dict)
    frozen: set[int] = field(default_factory=set)
    found: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    size: int = 0
    # The content hash of each features tensor asked about, by object (held, so its id stays its
    # own) and in-place version: a tensor used for several figures is hashed once.
    keys: dict[int, tuple[torch.Tensor, int, str]] = field(default_factory=dict)

    def key(self, features: torch.Tensor) -> str:
        known = self.keys.get(id(features))
        if known is not None and known[0] is features and known[1] == features._version:
            return known[2]
        found = _features_key(features)
        self.keys[id(features)] = (features, features._version, found)
        return found


_MEMO: ContextVar[_Memo | None] = ContextVar("frozen_predictions", default=None)


@contextmanager
def frozen_predictions() -> Iterator[None]:
    """A scope in which networks loaded through `frozen_network` are shared by weights hash and
    their class probabilities are computed once per set of features (the same bytes give the same
    probabilities, so every figure is what it would be without the scope). The unlearning job
    verifies the original for the no-op control, the same original as the result's "before", and
    a SISA result whose shards are mostly the original's: each of those forward passes runs once."""
    token = _MEMO.set(_Memo())
    try:
        yield
    finally:
        _MEMO.reset(token)


def frozen_network(weights: str, load: Callable[[], nn.Module]) -> nn.Module:
    """The network stored under `weights` (a content hash), loaded once per `frozen_predictions`
    scope; outside a scope, `load()`. Only for networks nothing trains afterwards."""
    memo = _MEMO.get()
    if memo is None:
        return load()
    network = memo.loaded.get(weights)
    if network is None:
        network = memo.loaded[weights] = load()
        memo.frozen.add(id(network))
    return network


def _features_key(features: torch.Tensor) -> str:
    data = features.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
    digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
    return digest.hexdigest()


def network_probas(
    family: ModelFamily, networks: Sequence[nn.Module], features: torch.Tensor
) -> list[torch.Tensor]:
    """Each network's class probabilities on the features' device, in order. Within a
    `frozen_predictions` scope a frozen network's are computed once per set of features (the
    features are hashed once per call, however many networks share them)."""
    memo = _MEMO.get()
    key = memo.key(features) if memo is not None and any(id(n) in memo.frozen for n in networks) else None
    found: list[torch.Tensor] = []
    for network in networks:
        proba = None
        if memo is not None and key is not None and id(network) in memo.frozen:
            proba = memo.found.get((id(network), key))
            if proba is None:
                proba = family.predict_proba(network, features).to(features.device)
                size = proba.numel() * proba.element_size()
                if memo.size + size <= MEMO_BYTES:
                    memo.found[(id(network), key)] = proba
                    memo.size += size
        else:
            proba = family.predict_proba(network, features).to(features.device)
        found.append(proba)
    return found


def ensemble_proba(
    family: ModelFamily, networks: Sequence[nn.Module], features: torch.Tensor
) -> torch.Tensor:
    """Mean of the networks' class probabilities (SISA aggregation), on the features' device."""
    if len(networks) == 0:
        raise ValueError("an ensemble needs at least one network")
    total = None
    for proba in network_probas(family, networks, features):
        total = proba if total is None else total + proba
    assert total is not None
    return total / len(networks)


def evaluate(
    family: ModelFamily,
    network_or_networks: nn.Module | Sequence[nn.Module],
    features: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of the (ensemble) probabilities.

    With no records, accuracy and loss are None rather than NaN, which JSON cannot carry.
    """
    networks = (
        [network_or_networks] if isinstance(network_or_networks, nn.Module) else list(network_or_networks)
    )
    if hasattr(family, "evaluate"):  # a family with figures of its own (causal_lm: token loss)
        return family.evaluate(networks, features, labels)
    n = int(labels.shape[0])
    if n == 0:
        return {"accuracy": None, "loss": None, "n": 0}
    proba = ensemble_proba(family, networks, features)
    labels = labels.to(proba.device)
    accuracy = (proba.argmax(dim=1) == labels).double().mean().item()
    picked = proba.gather(1, labels.view(-1, 1)).squeeze(1).double()
    loss = -torch.log(picked.clamp_min(1e-12)).mean().item()
    return {"accuracy": float(accuracy), "loss": float(loss), "n": n}
