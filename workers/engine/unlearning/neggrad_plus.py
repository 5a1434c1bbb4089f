"""NegGrad+: gradient ascent on the forget records balanced by descent on the retained ones.

Kurmanji et al. 2023 ("Towards Unbounded Machine Unlearning") name this baseline: minimise

    α·CE(retain batch) − (1 − α)·CE(forget batch)

over interleaved batches. Pure ascent has no floor: the forget loss grows without bound and
drags the whole network with it, and a forget loss far above the held-out loss is itself a
membership signal. So the ascent term is clamped at `forget_loss_cap`: once a forget batch is
that badly predicted, it contributes no gradient and only the retain term acts.

How much ascent is enough depends on the model: a generalising one barely remembers its forget
records, a memorising one fits their noisy labels. Given records the model never saw, the run
aims at their loss (the forget records of a retrain look unseen): the cap is their mean loss and
the run stops once the forget records' mean loss reaches theirs, checked every few steps.

That rule alone has no price limit: on a large forget set of a generalising model the forget loss
may take longer to reach the unseen loss than a retrain takes. So the run also stops once it has
processed `max_cost` times the examples of the model's training (its epochs × trained records,
the stopping checks' forward passes counted at a third of a training step each); the result is
then whatever the verification makes of it, and an escalation costs a retrain on top.

With the tuning half of the model's references and holdout (ForgetRetain.forget_reference_correct
and unseen_reference_correct), the stop is the verdict's own statistic instead: the calibrated
forget accuracy gap those instruments measure (stopping.CalibratedGap). The run stops once it has
closed and keeps the checked weights closest to a closed gap, while a distillation term on the
retain batches holds the original's answers elsewhere (the holdout's accuracy).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch.nn import functional as F

from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    Epochs,
    ForgetRetain,
    MethodCall,
    MethodHooks,
    MethodOutput,
    Weight,
    batches,
    cycled_batches,
    frozen_copy,
    report,
    take,
)
from workers.engine.unlearning.loop import DecayingOptimiserConfig, GradientRun
from workers.engine.unlearning.scrub import distillation_kl
from workers.engine.unlearning.stopping import CalibratedGap, UnseenLossTarget


@dataclass(config=STRICT)
class NegGradPlusConfig(DecayingOptimiserConfig):
    # Passes over the retain set; each retain batch is paired with the next forget batch, the
    # (usually tiny) forget set being reshuffled and repeated as often as needed.
    epochs: Epochs = 3
    # Forget records per step; small batches keep each ascent step gentle.
    forget_batch_size: BatchSize = 32
    # Weight of the retain descent; 1 − alpha weighs the forget ascent.
    alpha: Weight = 0.5
    # Forget cross-entropy above which the ascent stops. None: ln(n_classes), the loss of a
    # uniform guess, beyond which the network is already more wrong than chance.
    forget_loss_cap: Annotated[float, Field(gt=0, le=100)] | None = None
    # With records the model never saw (ForgetRetain.unseen_*), the run targets their loss
    # instead of a fixed effort: the ascent's cap is their mean loss, and training stops at the
    # first check where the forget records' mean loss has reached it, after at most
    # `target_epochs` passes. A memorising model needs far more ascent than a generalising one.
    target_unseen_loss: bool = True
    target_epochs: Epochs = 20
    # Steps between two checks of the stopping rule.
    check_every: Annotated[int, Field(ge=1, le=10_000)] = 5
    # Most work, in examples processed, as a fraction of the model's training (its family's
    # `epochs` × the trained records); None: no cap. A family without epochs is not capped.
    max_cost: Annotated[float, Field(gt=0, le=10)] | None = 0.5
    # With the tuning half's instruments (ForgetRetain.forget_reference_correct and
    # unseen_reference_correct) the run stops where the calibrated forget accuracy gap they
    # measure has closed, not on the loss targets, and keeps the checked weights closest to a
    # closed gap (stopping.CalibratedGap); the loss targets still cap each record's ascent.
    target_calibrated_gap: bool = True
    # Weight of a distillation term on the retain batches: KL(original ‖ network) at temperature
    # `distill_temperature` (as SCRUB's min-step), which holds the original's answers away from
    # the forget records (the holdout's accuracy: holdout_drop) while the ascent moves the forget
    # records. It also slows the forget loss's rise, so None means 1 where the calibrated gap
    # steers (the stop is set by the gap, not by a loss) and 0 otherwise.
    distill: Annotated[float, Field(ge=0, le=100)] | None = None
    distill_temperature: Annotated[float, Field(gt=0, le=100)] = 4.0


class NegGradPlus(MethodHooks):
    name = "neggrad_plus"
    config_class = NegGradPlusConfig
    description = "Ascend the forget loss (capped) while descending the retain loss."

    def run(self, call: MethodCall[NegGradPlusConfig]) -> MethodOutput:
        config = call.config or NegGradPlusConfig()
        run = GradientRun(self.name, call, config)
        network, data = run.network, run.data
        forget_batches = cycled_batches(data.n_forget, config.forget_batch_size, run.generator)
        cap = config.forget_loss_cap
        gap = CalibratedGap(network, data, enabled=config.target_calibrated_gap)
        rule = UnseenLossTarget(network, data, call.family_config, enabled=config.target_unseen_loss,
                                check_every=config.check_every, max_cost=config.max_cost, per_record=True,
                                stop_on_target=not gap.enabled)
        distill = config.distill if config.distill is not None else (1.0 if gap.enabled else 0.0)
        teacher = frozen_copy(call.network) if distill > 0 else None
        targets = data.forget_target_loss if rule.per_record else None
        if rule.target is not None and cap is None:
            cap = rule.target
        epochs = config.target_epochs if rule.target is not None else config.epochs
        capped_steps = 0
        epoch_figures: list[dict[str, float]] = []
        with run.training():
            for epoch in range(epochs):
                if rule.stopped is not None or gap.closed:
                    break
                retain_total = forget_total = 0.0
                epoch_steps = 0
                for retain_index in batches(data.n_retain, config.batch_size, run.generator):
                    forget_index = next(forget_batches)
                    retain_logits = network(take(data.retain_x, retain_index))
                    forget_logits = network(take(data.forget_x, forget_index))
                    if cap is None:
                        cap = math.log(retain_logits.shape[1])
                    retain_loss = F.cross_entropy(retain_logits, take(data.retain_y, retain_index))
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(take(data.retain_x, retain_index))
                        retain_loss = retain_loss + distill * distillation_kl(
                            retain_logits, teacher_logits, config.distill_temperature)
                    per_record = F.cross_entropy(forget_logits, take(data.forget_y, forget_index), reduction="none")
                    forget_loss = per_record.mean()
                    # Above the cap the clamp's gradient is zero: the ascent simply stops. With
                    # per-record targets each record stops at the loss it has where unseen.
                    if targets is not None:
                        ascent = torch.minimum(per_record, take(targets, forget_index).to(per_record.dtype)).mean()
                    else:
                        ascent = torch.clamp(forget_loss, max=cap)
                    run.descend(config.alpha * retain_loss - (1 - config.alpha) * ascent)
                    capped_steps += int(forget_loss.item() >= cap)
                    retain_total += retain_loss.item()
                    forget_total += forget_loss.item()
                    epoch_steps += 1
                    if rule.step(network, data, run.steps, len(retain_index) + len(forget_index)):
                        break
                    if gap.enabled and run.steps % config.check_every == 0:
                        rule.processed += rule.check_cost
                        if gap.observe(network, data, run.steps):
                            break
                epoch_figures.append(
                    {
                        "retain_loss": retain_total / epoch_steps,
                        "forget_loss": forget_total / epoch_steps,
                    }
                )
                report(call.progress, (epoch + 1) / epochs, "neggrad_plus")
            if gap.enabled:
                gap.observe(network, data, run.steps)
        rewound = gap.rewind(network)
        return run.result(forget_loss_cap=cap, **rule.details(), **gap.details(), rewound_to_step=rewound,
                          distill=distill, capped_steps=capped_steps, per_epoch=epoch_figures)
