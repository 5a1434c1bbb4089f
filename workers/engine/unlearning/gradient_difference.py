"""Gradient difference for language models: ascent on the forget records, descent on the rest.

Each step minimises

    retain_weight · NLL(retain batch) − forget_weight · min(NLL(forget batch), cap)

with NLL the mean negative log-likelihood per token (causal_lm windows). Plain ascent has no
floor: the forget loss grows without bound, the model degenerates, and a forget text scored far
below unseen text is itself a membership signal. Once a forget batch is predicted no better
than a uniform guess over tokens (the cap, ln 256 nats per byte token by default), its term stops
pushing and only the retain term acts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from workers.engine.families.causal_lm import codec_of, window_token_losses
from workers.engine.training import network_device
from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    ForgetRetain,
    LearningRate,
    MethodCall,
    MethodHooks,
    MethodOutput,
    check_finite,
    cycled_batches,
    dump_config,
    make_optimizer,
    report,
    seeded_generator,
    take,
    training_mode,
    working_copy,
)

Steps = Annotated[int, Field(ge=1, le=100_000)]
Positive = Annotated[float, Field(ge=0, le=100)]


@dataclass(config=STRICT)
class TextStepsConfig:
    """Settings both language-model methods have; each method's config extends it."""

    # Optimiser steps; each pairs a retain batch with a forget batch (the forget windows are
    # reshuffled and repeated as often as needed).
    steps: Steps = 60
    learning_rate: LearningRate = 1e-3
    batch_size: BatchSize = 16
    forget_batch_size: BatchSize = 8


@dataclass(config=STRICT)
class GradientDifferenceConfig(TextStepsConfig):
    forget_weight: Positive = 1.0
    retain_weight: Positive = 1.0
    # Forget NLL per token above which the ascent stops; None: a uniform guess over the tokens
    # (ln 256 over bytes; ln of the tokenizer's vocabulary for hf_causal_lm).
    forget_loss_cap: Annotated[float, Field(gt=0, le=100)] | None = None


def mean_token_nll(network: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    losses, mask = window_token_losses(network, windows)
    return (losses * mask).sum() / mask.sum().clamp_min(1)


@torch.no_grad()
def token_losses(network: nn.Module, data: ForgetRetain) -> dict[str, float]:
    network.eval()
    return {part: float(mean_token_nll(network, getattr(data, f"{part}_x")[:512])) for part in ("forget", "retain")}


def paired_batches(data: ForgetRetain, forget_batch_size: int, batch_size: int,
                   seed: int) -> tuple[Iterator[torch.Tensor], Iterator[torch.Tensor]]:
    """Endless forget and retain batches under one seeded generator (the language-model methods
    pair one of each per step)."""
    generator = seeded_generator(seed)
    forget = cycled_batches(data.n_forget, forget_batch_size, generator)
    return forget, cycled_batches(data.n_retain, batch_size, generator)


def clipped_step(network: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str, step: int) -> None:
    """One optimiser step on `loss`, its gradient norm clipped at 1 (a transformer's ascent can
    otherwise jump far in one step)."""
    check_finite(loss, name, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
    optimizer.step()


class TextRun:
    """One run of a language-model method on a copy of the call's network (the caller's is never
    touched): its data on the network's device, the losses before, Adam and the paired batches."""

    def __init__(self, method: str, call: MethodCall[Any], config: TextStepsConfig) -> None:
        self.method = method
        self.config = config
        self.network = working_copy(call.network)
        self.data = call.data.to(network_device(self.network))
        self.before = token_losses(self.network, self.data)
        self.optimizer = make_optimizer(self.network, "adam", config.learning_rate)
        self.forget_batches, self.retain_batches = paired_batches(
            self.data, config.forget_batch_size, config.batch_size, call.seed)

    def result(self, **figures: Any) -> MethodOutput:
        """The run's network and details: the method's own `figures` between the shared ones."""
        return MethodOutput(network=self.network, details={
            "method": self.method, "config": dump_config(self.config), "steps": self.config.steps, **figures,
            "before": self.before, "after": token_losses(self.network, self.data),
        })


class GradientDifference(MethodHooks):
    name = "gradient_difference"
    config_class = GradientDifferenceConfig
    description = "Language models: ascend the forget loss (capped) while descending the retain loss."

    def run(self, call: MethodCall[GradientDifferenceConfig]) -> MethodOutput:
        config = call.config or GradientDifferenceConfig()
        run = TextRun(self.name, call, config)
        network, data = run.network, run.data
        cap = config.forget_loss_cap or math.log(codec_of([network]).uniform_vocab)
        capped = 0
        with training_mode(network, call.seed):
            for step in range(config.steps):
                forget = mean_token_nll(network, take(data.forget_x, next(run.forget_batches)))
                retain = mean_token_nll(network, take(data.retain_x, next(run.retain_batches)))
                loss = config.retain_weight * retain - config.forget_weight * torch.clamp(forget, max=cap)
                clipped_step(network, run.optimizer, loss, self.name, step)
                capped += int(forget.item() >= cap)
                report(call.progress, (step + 1) / config.steps, self.name)
        return run.result(forget_loss_cap=cap, capped_steps=capped)
