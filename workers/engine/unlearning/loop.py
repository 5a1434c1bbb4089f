"""The training loop the gradient-based tabular methods share (finetune, neggrad_plus, scrub,
salun): their common optimiser settings and one run's preamble, step and result.

Each method keeps its own objective and pass structure; what they all did the same way lives
here, so a change to how a method starts, steps or reports cannot reach some of them only:

- a trainable copy of the network, the data on its device, and the losses before;
- the optimiser from the config, and the batch order drawn from the seed;
- a step: a finite loss or the run stops, fresh gradients, optional gradient masks, one update;
- the result: the method's figures between the shared ones (method, config, steps, before, after).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from pydantic.dataclasses import dataclass

from workers.engine.training import network_device
from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    Epochs,
    LearningRate,
    MethodCall,
    MethodOutput,
    Optimizer,
    WeightDecay,
    check_finite,
    dump_config,
    forget_retain_losses,
    make_optimizer,
    seeded_generator,
    training_mode,
    working_copy,
)


@dataclass(config=STRICT)
class OptimiserConfig:
    """Settings every gradient-based tabular method has; a method's config extends it and may
    change a default (its `epochs`, say)."""

    # Passes over the retain set.
    epochs: Epochs = 5
    learning_rate: LearningRate = 1e-3
    batch_size: BatchSize = 128
    optimizer: Optimizer = "adam"

    @property
    def decay(self) -> float:
        """The optimiser's weight decay: none unless the method's config offers it."""
        return 0.0


@dataclass(config=STRICT)
class DecayingOptimiserConfig(OptimiserConfig):
    """The base settings with weight decay, for the methods that update every weight (SalUn,
    which updates a masked subset, leaves decay out: it would shrink the weights outside the mask)."""

    weight_decay: WeightDecay = 0.0

    @property
    def decay(self) -> float:
        return self.weight_decay


class GradientRun:
    """One run of a gradient-based method on a copy of `network`; the caller's network is never
    touched, so a rejected result leaves the original for the exact fallback."""

    def __init__(self, method: str, call: MethodCall[Any], config: OptimiserConfig) -> None:
        self.method = method
        self.config = config
        self.seed = call.seed
        self.network = working_copy(call.network)
        self.data = call.data.to(network_device(self.network))
        self.before = self.losses()
        self.optimizer = make_optimizer(self.network, config.optimizer, config.learning_rate, config.decay)
        self.generator = seeded_generator(call.seed)
        self.steps = 0

    def losses(self) -> dict[str, float | None]:
        """The forget and retain losses the details report before and after the run (a family
        with another objective, image diffusion, reports its own)."""
        return forget_retain_losses(self.network, self.data)

    def training(self) -> AbstractContextManager[None]:
        """Train mode under the run's seeded dropout RNG (base.training_mode)."""
        return training_mode(self.network, self.seed)

    def descend(self, loss: torch.Tensor, *, checked: torch.Tensor | None = None,
                masks: Sequence[torch.Tensor] | None = None) -> None:
        """One optimiser step on `loss`. `checked` is the figure whose finiteness is checked where
        that is not the loss itself (an ascent descends the negated divergence); `masks` zero the
        gradients of the weights that must not move."""
        check_finite(loss if checked is None else checked, self.method, self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            for parameter, mask in zip(self.network.parameters(), masks):
                if parameter.grad is not None:
                    parameter.grad.mul_(mask)
        self.optimizer.step()
        self.steps += 1

    def result(self, **figures: Any) -> MethodOutput:
        """The run's network and details: the method's own `figures` between the shared ones."""
        return MethodOutput(network=self.network, details={
            "method": self.method, "config": dump_config(self.config), "steps": self.steps, **figures,
            "before": self.before, "after": self.losses(),
        })

