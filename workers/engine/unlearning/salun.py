"""SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency").

Only some weights carry the forget records: those where the forget loss is steepest. SalUn
keeps a mask of the `mask_fraction` weights with the largest |∂ forget loss / ∂ weight| at the
original network and then updates those alone, training on the forget records under random
wrong labels together with the retained records under their true labels. Touching only the
salient weights is what keeps the retained behaviour intact while the forget records lose
their memorised answers.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    MethodCall,
    MethodHooks,
    MethodOutput,
    batches,
    cycled_batches,
    report,
    take,
)
from workers.engine.unlearning.loop import GradientRun, OptimiserConfig


@dataclass(config=STRICT)
class SalUnConfig(OptimiserConfig):
    """The base settings (5 passes over the retain set, each retain batch paired with the next
    forget batch), without weight decay: it would shrink the weights outside the mask, which must
    stay put."""

    # Share of all weights (biases included) that may change, ranked by the saliency |grad|.
    mask_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    forget_batch_size: BatchSize = 32
    # Weight of the random-label loss on the forget batch relative to the retain loss. Random
    # labels contradict what the features say, so a heavy weight damages the classes the
    # forget records look like, not only the records themselves.
    forget_weight: Annotated[float, Field(ge=0, le=100)] = 0.05


def saliency_mask(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float
) -> list[torch.Tensor]:
    """Boolean masks, one per parameter, of the globally top `fraction` weights by |gradient|
    of the forget loss."""
    network.zero_grad(set_to_none=True)
    was_training = network.training
    network.eval()
    F.cross_entropy(network(x), y).backward()
    network.train(was_training)
    return saliency_masks_from(network, fraction)


def saliency_masks_from(network: nn.Module, fraction: float) -> list[torch.Tensor]:
    """The masks of `saliency_mask` from the gradients the forget loss left on the network (which
    are cleared), for any objective (image diffusion's denoising loss too)."""
    magnitudes = [
        torch.zeros_like(p) if p.grad is None else p.grad.detach().abs()
        for p in network.parameters()
    ]
    network.zero_grad(set_to_none=True)
    flat = torch.cat([m.reshape(-1) for m in magnitudes])
    keep = max(1, round(fraction * flat.numel()))
    # Rank rather than threshold, so ties at the threshold cannot push the share past `keep`.
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    masks, start = [], 0
    for magnitude in magnitudes:
        masks.append(chosen[start : start + magnitude.numel()].view_as(magnitude))
        start += magnitude.numel()
    return masks


def random_wrong_labels(
    labels: torch.Tensor, n_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """A uniformly random label other than the true one, for every record."""
    shift = torch.randint(1, n_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % n_classes


class SalUn(MethodHooks):
    name = "salun"
    config_class = SalUnConfig
    description = "Random labels on the forget set, updating only the weights salient for it."

    def run(self, call: MethodCall[SalUnConfig]) -> MethodOutput:
        config = call.config or SalUnConfig()
        run = GradientRun(self.name, call, config)
        network, data = run.network, run.data
        masks = saliency_mask(network, data.forget_x, data.forget_y, config.mask_fraction)
        forget_batches = cycled_batches(data.n_forget, config.forget_batch_size, run.generator)
        epoch_figures: list[dict[str, float]] = []
        with run.training():
            for epoch in range(config.epochs):
                retain_total = forget_total = 0.0
                epoch_steps = 0
                for retain_index in batches(data.n_retain, config.batch_size, run.generator):
                    forget_index = next(forget_batches)
                    retain_logits = network(take(data.retain_x, retain_index))
                    forget_logits = network(take(data.forget_x, forget_index))
                    wrong = random_wrong_labels(
                        take(data.forget_y, forget_index), forget_logits.shape[1], run.generator
                    )
                    retain_loss = F.cross_entropy(retain_logits, take(data.retain_y, retain_index))
                    forget_loss = F.cross_entropy(forget_logits, wrong)
                    run.descend(retain_loss + config.forget_weight * forget_loss, masks=masks)
                    epoch_steps += 1
                    retain_total += retain_loss.item()
                    forget_total += forget_loss.item()
                epoch_figures.append(
                    {
                        "retain_loss": retain_total / epoch_steps,
                        "forget_random_label_loss": forget_total / epoch_steps,
                    }
                )
                report(call.progress, (epoch + 1) / config.epochs, "salun")
        return run.result(
            masked_weights=int(sum(int(m.sum()) for m in masks)),
            total_weights=int(sum(m.numel() for m in masks)),
            per_epoch=epoch_figures,
        )
