"""Stopping rules of the methods that aim the forget records' loss at the loss they would have
unseen (neggrad_plus), with a price limit against the model's training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.engine.unlearning.base import ForgetRetain, unseen_and_forget_losses


class UnseenLossTarget:
    """The stopping rule of the methods that aim the forget records' mean loss at the loss of
    records the model never saw (neggrad_plus, salun), with a price limit.

    `target` is the unseen records' mean loss at the start (None without unseen records: the
    method then runs its fixed epochs). `step` is called after every optimiser step with the
    examples it processed; it says stop at the first check (every `check_every` steps) where the
    forget loss has reached the unseen loss, or once the examples processed reach `max_cost` ×
    the model's training (its family's `epochs` × trained records; the checks' forward passes
    count a third of a training example each). A family without `epochs` is not capped."""

    def __init__(self, network: nn.Module, data: ForgetRetain, family_config: Any, *, enabled: bool,
                 check_every: int, max_cost: float | None, per_record: bool = False) -> None:
        losses = unseen_and_forget_losses(network, data) if enabled else None
        self.target = None if losses is None else losses[0]
        # With per-record targets the rule stops once the forget records' remaining shortfall
        # below their own targets is under `SHORTFALL` of the targets' total.
        self.per_record = per_record and enabled and data.forget_target_loss is not None
        self.check_every = check_every
        epochs = getattr(family_config, "epochs", None)
        self.budget = (max_cost * epochs * data.n_trained
                       if max_cost is not None and isinstance(epochs, int) and epochs > 0 else None)
        unseen = 0 if data.unseen_x is None else int(data.unseen_x.shape[0])
        self.check_cost = (data.n_forget + unseen) / 3
        self.processed = 0.0
        self.stopped: int | None = None
        self.exhausted: int | None = None

    def step(self, network: nn.Module, data: ForgetRetain, step: int, examples: int) -> bool:
        self.processed += examples
        if self.per_record and step % self.check_every == 0:
            self.processed += self.check_cost
            if shortfall(network, data) <= SHORTFALL:
                self.stopped = step
                return True
        elif self.target is not None and step % self.check_every == 0:
            # Against the unseen loss now: the retain descent moves it too.
            now = unseen_and_forget_losses(network, data)
            self.processed += self.check_cost
            if now is not None and now[1] >= now[0]:
                self.stopped = step
                return True
        if self.budget is not None and self.processed >= self.budget:
            self.stopped = self.exhausted = step
            return True
        return False

    def details(self) -> dict[str, Any]:
        return {"unseen_loss_target": self.target, "per_record_targets": self.per_record, "stopped_at_step": self.stopped,
                "cost_budget_examples": self.budget, "cost_budget_exhausted_at_step": self.exhausted}


# Share of the per-record targets' total loss still missing when a per-record rule stops.
SHORTFALL = 0.05


def shortfall(network: nn.Module, data: ForgetRetain) -> float:
    """Σ max(0, target_i − loss_i) / Σ target_i over the forget records (0 without targets)."""
    if data.forget_target_loss is None:
        return 0.0
    with torch.no_grad():
        was_training = network.training
        network.eval()
        losses = F.cross_entropy(network(data.forget_x), data.forget_y, reduction="none")
        network.train(was_training)
    targets = data.forget_target_loss.to(losses.dtype)
    total = float(targets.sum())
    return 0.0 if total <= 0 else float(torch.clamp(targets - losses, min=0).sum()) / total
