"""Fine-tuning on the retained records only.

The network keeps training on what it may remember and never sees the forget records again;
whatever it had memorised about them fades through catastrophic forgetting. Cheap and safe for
utility, but the weakest forgetting of the approximate methods: records the rest of the data
explains well are barely moved, so it relies on verification to reject it when it falls short.
"""

from __future__ import annotations

from pydantic.dataclasses import dataclass
from torch.nn import functional as F

from workers.engine.unlearning.base import (
    STRICT,
    MethodCall,
    MethodHooks,
    MethodOutput,
    batches,
    report,
    take,
)
from workers.engine.unlearning.loop import DecayingOptimiserConfig, GradientRun


@dataclass(config=STRICT)
class FineTuneConfig(DecayingOptimiserConfig):
    """The base settings as they are: 5 passes over the retain set at a step of 1e-3. A larger
    step than the original training's final one is what drives the forgetting; too large and the
    retain accuracy suffers before the forget records are forgotten."""


class FineTune(MethodHooks):
    name = "finetune"
    config_class = FineTuneConfig
    description = "Keep training on the retained records only, so the forgotten ones fade."

    def run(self, call: MethodCall[FineTuneConfig]) -> MethodOutput:
        config = call.config or FineTuneConfig()
        run = GradientRun(self.name, call, config)
        network, data = run.network, run.data
        epoch_losses: list[float] = []
        with run.training():
            for epoch in range(config.epochs):
                total, count = 0.0, 0
                for index in batches(data.n_retain, config.batch_size, run.generator):
                    loss = F.cross_entropy(
                        network(take(data.retain_x, index)), take(data.retain_y, index)
                    )
                    run.descend(loss)
                    total += loss.item() * len(index)
                    count += len(index)
                epoch_losses.append(total / count)
                report(call.progress, (epoch + 1) / config.epochs, "finetune")
        return run.result(retain_loss_per_epoch=epoch_losses)
