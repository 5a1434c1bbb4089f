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
                 check_every: int, max_cost: float | None, per_record: bool = False,
                 stop_on_target: bool = True) -> None:
        losses = unseen_and_forget_losses(network, data) if enabled else None
        self.target = None if losses is None else losses[0]
        # With per-record targets the rule stops once the forget records' remaining shortfall
        # below their own targets is under `SHORTFALL` of the targets' total.
        self.per_record = per_record and enabled and data.forget_target_loss is not None
        # False: another rule (CalibratedGap) decides when the target is reached; this one only
        # keeps the price limit.
        self.stop_on_target = stop_on_target
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
        if not self.stop_on_target:
            pass
        elif self.per_record and step % self.check_every == 0:
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


def calibrated_gap(network: nn.Module, data: ForgetRetain) -> float | None:
    """The forget accuracy gap as the verdict calibrates it (checks.py `reference_gap_check`), on
    the tuning instruments the data carry: mean over the forget records of (correct − their
    tuning OUT references' mean correctness) less the same over the unseen records (the tuning
    half of the holdout). None without those instruments."""
    if (data.forget_reference_correct is None or data.unseen_reference_correct is None
            or data.unseen_x is None or data.unseen_y is None or data.unseen_y.shape[0] == 0):
        return None
    with torch.no_grad():
        was_training = network.training
        network.eval()
        forget = (network(data.forget_x).argmax(dim=1) == data.forget_y).double()
        unseen = (network(data.unseen_x).argmax(dim=1) == data.unseen_y).double()
        network.train(was_training)
    forget_refs = data.forget_reference_correct.to(forget.device, torch.float64)
    unseen_refs = data.unseen_reference_correct.to(unseen.device, torch.float64)
    return float((forget - forget_refs).mean() - (unseen - unseen_refs).mean())


class CalibratedGap:
    """A stopping rule that aims at the verdict's own statistic, measured on the tuning half
    only: the calibrated forget accuracy gap (`calibrated_gap`) of the original is positive (it
    knows its forget records better than models that never saw them do); a method has forgotten
    enough once that gap has closed. Both sides count (the verdict is two-sided): `observe`
    keeps the weights whose |gap| came closest to 0 and says stop at the first check where the
    gap is ≤ 0, and `rewind` loads those weights, so an overshoot costs at most the last steps.
    Disabled (every call a no-op) without the tuning instruments."""

    def __init__(self, network: nn.Module, data: ForgetRetain, *, enabled: bool = True) -> None:
        start = calibrated_gap(network, data) if enabled else None
        self.enabled = start is not None
        self.start = start
        self.checks: list[tuple[int, float]] = []
        self.best: tuple[float, int, float, dict[str, torch.Tensor]] | None = None
        self.closed_at: int | None = None
        if start is not None:
            self._keep(network, 0, start)
            if start <= 0:
                # The original already generalises to its forget records as models that never
                # saw them do: nothing to forget by this measure.
                self.closed_at = 0

    def _keep(self, network: nn.Module, step: int, gap: float) -> None:
        self.checks.append((step, gap))
        if self.best is None or abs(gap) < self.best[0]:
            self.best = (abs(gap), step, gap, {k: v.detach().clone() for k, v in network.state_dict().items()})

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def observe(self, network: nn.Module, data: ForgetRetain, step: int) -> bool:
        """Measure the gap after `step`; True once it has closed (≤ 0)."""
        if not self.enabled:
            return False
        gap = calibrated_gap(network, data)
        if gap is None:
            return False
        self._keep(network, step, gap)
        if gap <= 0 and self.closed_at is None:
            self.closed_at = step
        return gap <= 0

    def rewind(self, network: nn.Module) -> int | None:
        """Load the weights whose |gap| was smallest; the step they were taken at (None: disabled)."""
        if self.best is None:
            return None
        network.load_state_dict(self.best[3])
        return self.best[1]

    def details(self) -> dict[str, Any]:
        return {"calibrated_gap_start": self.start, "calibrated_gap_closed_at_step": self.closed_at,
                "calibrated_gap_best": None if self.best is None else
                {"step": self.best[1], "gap": self.best[2]},
                "calibrated_gap_checks": len(self.checks)}
