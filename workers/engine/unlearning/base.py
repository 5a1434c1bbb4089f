"""What every unlearning method shares: its inputs, its result, its registry.

A method takes a trained network and the split of its training data into the records to forget
and the records to keep, and answers a network that behaves as if the forget records had never
been seen. `run` never mutates the network it is given: verification compares the model before
and after, and a method that misses its thresholds must leave the original intact for the exact
fallback.

Two methods are exact and are run by the job runner, not from here, because they need the
dataset lineage rather than a network: see `EXACT_METHODS`. Everything in `METHODS` is
approximate except `certified_newton`, whose result is (ε, δ)-indistinguishable from a retrain
while its error budget lasts.

Method networks are the families' own modules; methods call `network(features)` and treat the
answer as logits [n, n_classes], which is what every built-in family builds.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, asdict, dataclass, fields
from functools import lru_cache
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import torch
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from torch import nn
from torch.nn import functional as F

from app.unlearning.types import EXACT_METHODS as EXACT_METHODS
from app.unlearning.types import JsonObject
from workers.engine.training import derive_seed, network_device, rng_devices, trainable_parameters

# Method configs are pydantic dataclasses with this config: unknown keys are errors, not ignored.
STRICT = ConfigDict(extra="forbid")

# Field types shared by the method configs.
Epochs = Annotated[int, Field(ge=1, le=1000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]
BatchSize = Annotated[int, Field(ge=1, le=100_000)]
WeightDecay = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0, le=1)]
Optimizer = Literal["adam", "sgd"]

# Called with (fraction done in [0, 1], short name of the current phase).
Progress = Callable[[float, str], None]


@dataclass
class ForgetRetain:
    """The training records of one model, split by the erasure: features [n, d], labels [n]."""

    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    # Records the model never saw (a holdout sample), optional: methods with a stopping rule
    # aim the forget records' loss at theirs instead of running a fixed number of epochs.
    unseen_x: torch.Tensor | None = None
    unseen_y: torch.Tensor | None = None
    # Records the model was trained on (the retain set above may be a sample of them), for
    # methods that cap their cost against the training's; None: forget + retain.
    trained_records: int | None = None
    # Each forget record's loss under models that never saw it (its OUT reference models,
    # workers/engine/verification/references.forget_loss_targets), optional: neggrad_plus then stops each
    # record's ascent at its own target instead of at the unseen records' mean loss.
    forget_target_loss: torch.Tensor | None = None
    # What the verdict's calibrated accuracy gap reads, from the tuning instruments only
    # (workers/engine/verification/references.py `split`): each forget record's mean correctness
    # under the tuning references that never saw it, and each unseen record's mean correctness
    # under all of them. Optional: the methods then stop where the gap the tuning half measures
    # has closed (stopping.CalibratedGap) instead of running a fixed effort.
    forget_reference_correct: torch.Tensor | None = None
    unseen_reference_correct: torch.Tensor | None = None

    @property
    def n_trained(self) -> int:
        return self.trained_records if self.trained_records is not None else self.n_forget + self.n_retain

    def __post_init__(self) -> None:
        for part in ("forget", "retain"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{part} set: expected features [n, d] and labels [n], got "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                )
            if y.dtype != torch.int64:
                raise ValueError(f"{part} labels must be int64, got {y.dtype}")
        if self.forget_x.shape[1] != self.retain_x.shape[1]:
            raise ValueError(
                f"forget and retain features differ in width: "
                f"{self.forget_x.shape[1]} != {self.retain_x.shape[1]}"
            )
        if self.forget_x.shape[0] == 0:
            raise ValueError("the forget set is empty; there is nothing to unlearn")
        if self.retain_x.shape[0] == 0:
            raise ValueError("the retain set is empty; nothing would be left to learn from")

    def to(self, device: torch.device) -> ForgetRetain:
        unseen: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if self.unseen_x is not None and self.unseen_y is not None:
            unseen = (self.unseen_x.to(device), self.unseen_y.to(device))
        return ForgetRetain(
            self.forget_x.to(device), self.forget_y.to(device),
            self.retain_x.to(device), self.retain_y.to(device), *unseen, trained_records=self.trained_records,
            forget_target_loss=None if self.forget_target_loss is None else self.forget_target_loss.to(device),
            forget_reference_correct=_moved(self.forget_reference_correct, device),
            unseen_reference_correct=_moved(self.unseen_reference_correct, device),
        )

    @property
    def n_forget(self) -> int:
        return int(self.forget_y.shape[0])

    @property
    def n_retain(self) -> int:
        return int(self.retain_y.shape[0])


def _moved(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class MethodCall(Generic[ConfigT]):
    """What one method run is given: the model's family and its settings, one shard network (left
    untouched: a method works on a copy), the records split into forget and retain, and the
    method's own settings (None: its defaults)."""

    family: Any
    network: nn.Module
    family_config: Any
    data: ForgetRetain
    config: ConfigT | None = None
    _: KW_ONLY
    seed: int
    progress: Progress | None = None


@dataclass
class MethodOutput:
    """Stage 1 of a new model version: what one method run returns for one shard network."""

    network: nn.Module
    # JSON-serialisable figures for the job record and the certificate (steps, losses, budget…).
    details: dict[str, Any]


@runtime_checkable
class Method(Protocol):
    name: str
    # True only where the result is equivalent to retraining (the runner's retrain and sisa).
    exact: bool
    # Pydantic dataclass holding the method's settings; every field has a default.
    config_class: type
    description: str
    # The hooks of MethodHooks.
    samples_retain: bool
    repairable: bool

    def next_state(self, old_state: JsonObject, details: JsonObject) -> JsonObject: ...

    def blocking_reasons(self, state: JsonObject) -> list[str]: ...

    def run(self, call: MethodCall[Any]) -> MethodOutput: ...


class MethodHooks:
    """What the unlearning job asks of an approximate method besides `run`, with the answers of a
    method that needs nothing special; a method whose result the job must treat differently
    (certified_newton's retain set, budget and state) overrides them, so the job never tests a
    method's name."""

    exact = False
    # The method may train on a sample of the retained records (context.RETAIN_SAMPLE); False: it
    # needs every retained record.
    samples_retain = True
    # A result blocked only by a few records the per-record audit flags may be repaired from its
    # weights (workers/engine/unlearning/repair.py).
    repairable = True

    def next_state(self, old_state: JsonObject, details: JsonObject) -> JsonObject:
        """The model's method state after this run (`details`), carried over unchanged here."""
        return dict(old_state)

    def blocking_reasons(self, state: JsonObject) -> list[str]:
        """Why a result with this state may not be certified whatever its verdicts (empty: none)."""
        return []


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class MethodConfigError(ValueError):
    pass


class UnlearningDiverged(RuntimeError):
    """A loss became NaN or infinite: the run's network is unusable."""


_IMPLEMENTATIONS = {
    "finetune": "workers.engine.unlearning.finetune:FineTune",
    "neggrad_plus": "workers.engine.unlearning.neggrad_plus:NegGradPlus",
    "scrub": "workers.engine.unlearning.scrub:Scrub",
    "salun": "workers.engine.unlearning.salun:SalUn",
    "certified_newton": "workers.engine.unlearning.certified_newton:CertifiedNewton",
    # Language models (causal_lm) only.
    "gradient_difference": "workers.engine.unlearning.gradient_difference:GradientDifference",
    "npo": "workers.engine.unlearning.npo:NPO",
}
# Methods whose objective differs by the family's data kind, under the same names: the image
# diffusion variants (workers/engine/unlearning/diffusion.py).
_VARIANTS = {
    "image": {
        "salun": "workers.engine.unlearning.diffusion:DiffusionSalUn",
        "gradient_difference": "workers.engine.unlearning.diffusion:DiffusionGradientDifference",
    },
}


@lru_cache(maxsize=4)
def _load_methods(data_kind: str = "tabular") -> dict[str, Method]:
    # Imported on first use: the method modules import this one.
    methods: dict[str, Method] = {}
    paths = _VARIANTS[data_kind] if data_kind in _VARIANTS else _IMPLEMENTATIONS
    for name, path in paths.items():
        module_name, _, attr = path.partition(":")
        method = getattr(importlib.import_module(module_name), attr)()
        if method.name != name:
            raise RuntimeError(f"{path} calls itself {method.name!r}, registered as {name!r}")
        methods[name] = method
    return methods


def __getattr__(attr: str) -> Any:
    if attr == "METHODS":
        return _load_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get_method(name: str, data_kind: str = "tabular") -> Method:
    """The method called `name`; for a family whose data kind has variants of its own (images),
    that kind's variant, and only those."""
    if name in EXACT_METHODS:
        raise UnknownMethodError(
            f"{name!r} is an exact method; the job runner retrains for it, there is nothing "
            f"to run on an existing network"
        )
    methods = _load_methods(data_kind)
    if name not in methods:
        known = ", ".join(sorted(methods) + sorted(EXACT_METHODS))
        raise UnknownMethodError(f"unknown unlearning method {name!r}; known methods: {known}")
    return methods[name]


def parse_method_config(name: str, overrides: dict[str, Any] | None = None, data_kind: str = "tabular") -> Any:
    """The method's config with `overrides` applied; unknown or invalid settings raise."""
    config_class = get_method(name, data_kind).config_class
    overrides = dict(overrides or {})
    allowed = [f.name for f in fields(config_class)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise MethodConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for method {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    try:
        return TypeAdapter(config_class).validate_python(overrides)
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(filter(None, [".".join(str(p) for p in err["loc"]), err["msg"]]))
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise MethodConfigError(f"invalid settings for method {name!r}: {problems}") from None


def dump_config(config: Any) -> dict[str, Any]:
    return asdict(config)


# Helpers shared by the gradient-based methods.


def working_copy(network: nn.Module) -> nn.Module:
    """A trainable deep copy, so the caller's network survives a failed or rejected run."""
    copied = copy.deepcopy(network)
    for parameter in trainable_parameters(copied):
        parameter.requires_grad_(True)
    return copied


def frozen_copy(network: nn.Module) -> nn.Module:
    copied = copy.deepcopy(network).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def make_optimizer(
    network: nn.Module, kind: str, learning_rate: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Adam by default: the built-in families sit on very different loss scales, and Adam's
    step size does not depend on the gradient's magnitude."""
    if kind == "sgd":
        return torch.optim.SGD(
            trainable_parameters(network), lr=learning_rate, momentum=0.9, weight_decay=weight_decay
        )
    if kind == "adam":
        return torch.optim.Adam(trainable_parameters(network), lr=learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; expected 'adam' or 'sgd'")


@contextmanager
def training_mode(network: nn.Module, seed: int) -> Iterator[None]:
    """Train mode under a forked, seeded global RNG (it only feeds dropout), eval mode after:
    the run is reproducible and the caller's RNG state is left alone."""
    with torch.random.fork_rng(devices=rng_devices(network_device(network))):
        torch.manual_seed(derive_seed(seed, "unlearning-dropout"))
        network.train()
        try:
            yield
        finally:
            network.eval()


def seeded_generator(seed: int) -> torch.Generator:
    # Batch order is drawn on the CPU whatever the device, so a run is reproducible everywhere.
    return torch.Generator().manual_seed(derive_seed(seed, "unlearning-order"))


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def cycled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless reshuffled passes; the forget set is usually far smaller than the retain set."""
    while True:
        yield from batches(n, batch_size, generator)


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x[index.to(x.device)]


def check_finite(loss: torch.Tensor, method: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise UnlearningDiverged(f"{method}: loss became {loss.item()} at step {step}")


@torch.no_grad()
def mean_loss(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Mean cross-entropy in eval mode, for the details; None for an empty set."""
    if y.shape[0] == 0:
        return None
    was_training = network.training
    network.eval()
    loss = F.cross_entropy(network(x), y).item()
    network.train(was_training)
    return loss


def unseen_and_forget_losses(network: nn.Module, data: ForgetRetain) -> tuple[float, float] | None:
    """Mean loss of the unseen records and of the forget records, for the stopping rules that aim
    the one at the other; None without unseen records."""
    if data.unseen_x is None or data.unseen_y is None:
        return None
    unseen = mean_loss(network, data.unseen_x, data.unseen_y)
    forget = mean_loss(network, data.forget_x, data.forget_y)
    return None if unseen is None or forget is None else (unseen, forget)


def report(progress: Progress | None, fraction: float, step: str) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, fraction)), step)


def forget_retain_losses(network: nn.Module, data: ForgetRetain) -> dict[str, float | None]:
    return {
        "forget_loss": mean_loss(network, data.forget_x, data.forget_y),
        "retain_loss": mean_loss(network, data.retain_x, data.retain_y),
    }
