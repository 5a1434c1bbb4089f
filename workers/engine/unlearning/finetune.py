"""Fine-tuning on the retained records only.

The network keeps training on what it may remember and never sees the forget records again;
whatever it had memorised about them fades through catastrophic forgetting. Cheap and safe for
utility, but the weakest forgetting of the approximate methods: records the rest of the data
explains well are barely moved, so it relies on verification to reject it when it falls short.
"""

from __future__ import annotations

from typing import Any

from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from workers.engine.training import network_device
from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    Epochs,
    ForgetRetain,
    LearningRate,
    Optimizer,
    Progress,
    UnlearnResult,
    WeightDecay,
    batches,
    check_finite,
    dump_config,
    forget_retain_losses,
    make_optimizer,
    report,
    seeded_generator,
    take,
    training_mode,
    working_copy,
)


@dataclass(config=STRICT)
class FineTuneConfig:
    # Passes over the retain set.
    epochs: Epochs = 5
    # A larger step than the original training's final one is what drives the forgetting;
    # too large and the retain accuracy suffers before the forget records are forgotten.
    learning_rate: LearningRate = 1e-3
    batch_size: BatchSize = 128
    optimizer: Optimizer = "adam"
    weight_decay: WeightDecay = 0.0


class FineTune:
    name = "finetune"
    exact = False
    config_class = FineTuneConfig
    description = "Keep training on the retained records only, so the forgotten ones fade."

    def run(
        self,
        family: Any,
        network: nn.Module,
        family_config: Any,
        data: ForgetRetain,
        config: FineTuneConfig | None = None,
        *,
        seed: int,
        progress: Progress | None = None,
    ) -> UnlearnResult:
        config = config or FineTuneConfig()
        network = working_copy(network)
        data = data.to(network_device(network))
        before = forget_retain_losses(network, data)
        optimizer = make_optimizer(
            network, config.optimizer, config.learning_rate, config.weight_decay
        )
        generator = seeded_generator(seed)
        epoch_losses: list[float] = []
        step = 0
        with training_mode(network, seed):
            for epoch in range(config.epochs):
                total, count = 0.0, 0
                for index in batches(data.n_retain, config.batch_size, generator):
                    optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(
                        network(take(data.retain_x, index)), take(data.retain_y, index)
                    )
                    check_finite(loss, self.name, step)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    total += loss.item() * len(index)
                    count += len(index)
                epoch_losses.append(total / count)
                report(progress, (epoch + 1) / config.epochs, "finetune")
        return UnlearnResult(
            network=network,
            details={
                "method": self.name,
                "config": dump_config(config),
                "steps": step,
                "retain_loss_per_epoch": epoch_losses,
                "before": before,
                "after": forget_retain_losses(network, data),
            },
        )
