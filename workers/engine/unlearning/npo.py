"""Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning"), with a retain term.

For a forget sequence y with log-likelihood log π_θ(y) under the network being unlearned and
log π_ref(y) under the model before unlearning (frozen), the NPO loss is

    L_NPO = −(2/β) · log σ(−β · (log π_θ(y) − log π_ref(y)))  =  (2/β) · log(1 + (π_θ(y)/π_ref(y))^β)

averaged over the forget batch. It is DPO with only a losing answer: its gradient is gradient
ascent on log π_θ(y) weighted by 2·σ(β·ratio), which fades as the sequence becomes less likely
than under the reference, so unlike plain ascent it slows down by itself instead of
collapsing the model. The retain term is the usual mean token NLL on retained records:

    loss = forget_weight · L_NPO + retain_weight · NLL(retain batch).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch.nn import functional as F

from workers.engine.families.causal_lm import sequence_log_likelihood
from workers.engine.unlearning.base import (
    STRICT,
    MethodCall,
    MethodHooks,
    MethodOutput,
    frozen_copy,
    report,
    take,
    training_mode,
)
from workers.engine.unlearning.gradient_difference import (
    Positive,
    TextRun,
    TextStepsConfig,
    clipped_step,
    mean_token_nll,
)


@dataclass(config=STRICT)
class NPOConfig(TextStepsConfig):
    # Inverse temperature β of the preference loss (the paper's default 0.1). As β → 0 the loss
    # tends to plain gradient ascent on the forget log-likelihood.
    beta: Annotated[float, Field(gt=0, le=100)] = 0.1
    forget_weight: Positive = 1.0
    retain_weight: Positive = 1.0


def npo_loss(log_likelihood: torch.Tensor, reference_log_likelihood: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean NPO loss of sequences given their log-likelihoods under the network and the reference."""
    return (-2.0 / beta * F.logsigmoid(-beta * (log_likelihood - reference_log_likelihood))).mean()


class NPO(MethodHooks):
    name = "npo"
    config_class = NPOConfig
    description = "Language models: Negative Preference Optimization against the model before unlearning, plus a retain term."

    def run(self, call: MethodCall[NPOConfig]) -> MethodOutput:
        config = call.config or NPOConfig()
        reference = frozen_copy(call.network)
        run = TextRun(self.name, call, config)
        network, data = run.network, run.data
        with torch.no_grad():
            reference_ll = torch.cat([sequence_log_likelihood(reference, data.forget_x[start:start + 256])
                                      for start in range(0, data.n_forget, 256)])
        last_npo = None
        with training_mode(network, call.seed):
            for step in range(config.steps):
                index = next(run.forget_batches)
                forget = npo_loss(sequence_log_likelihood(network, take(data.forget_x, index)),
                                  take(reference_ll, index), config.beta)
                retain = mean_token_nll(network, take(data.retain_x, next(run.retain_batches)))
                loss = config.forget_weight * forget + config.retain_weight * retain
                clipped_step(network, run.optimizer, loss, self.name, step)
                last_npo = forget.item()
                report(call.progress, (step + 1) / config.steps, self.name)
        return run.result(last_npo_loss=last_npo)
