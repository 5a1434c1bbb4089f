"""The approximate methods of image diffusion models (image_diffusion), under the names of the
methods they adapt: the job dispatches `salun` and `gradient_difference` here for image models
(`base.get_method(name, data_kind="image")`).

Both work on the denoising objective: a network remembers an image when it predicts the noise
added to it well (a low ε-loss), so forgetting raises that loss on the forget images while a
retain term keeps it low on the rest.

- `salun`, SalUn's diffusion variant (Fan et al. 2024, section 4, "SalUn for image
  generation"): a saliency mask of the weights with the largest |∂ forget denoising loss / ∂ w|,
  then masked fine-tuning in which each noisy forget image is steered towards another target:
  the network learns to predict the noise that turns it into a retained image (for a conditional
  model, one of another label), beside the ordinary denoising loss on retained images;
- `gradient_difference`: ascent on the forget images' denoising loss with descent on the
  retained ones' (the diffusion form of gradient difference / NegGrad+), the ascent capped at the
  loss unseen images have, so the forget images end up denoised like images never seen rather
  than worse (which would single them out again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn

from workers.engine.families.image_diffusion import (
    as_images,
    class_count,
    denoising_losses,
    fixed_noise,
    fixed_timestep_losses,
    noise_levels,
    random_noise_and_timesteps,
)
from workers.engine.unlearning.base import (
    STRICT,
    BatchSize,
    ForgetRetain,
    MethodCall,
    MethodHooks,
    MethodOutput,
    cycled_batches,
    report,
    take,
)
from workers.engine.unlearning.loop import GradientRun, OptimiserConfig
from workers.engine.unlearning.salun import saliency_masks_from

Steps = Annotated[int, Field(ge=1, le=100_000)]
# One step's forget part of the loss, from the forget batch's indices and images.
ForgetTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Weight = Annotated[float, Field(ge=0, le=100)]


@dataclass(config=STRICT)
class DiffusionConfig(OptimiserConfig):
    """Both methods: `steps` optimiser steps, each pairing a retain batch with a forget batch."""

    steps: Steps = 200
    batch_size: BatchSize = 32
    forget_batch_size: BatchSize = 16


@dataclass(config=STRICT)
class DiffusionSalUnConfig(DiffusionConfig):
    # Share of the weights that may change, ranked by the saliency |grad| of the forget loss.
    mask_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    # Weight of the steered forget loss against the retain denoising loss.
    forget_weight: Weight = 1.0


@dataclass(config=STRICT)
class DiffusionGradientDifferenceConfig(DiffusionConfig):
    forget_weight: Weight = 1.0
    retain_weight: Weight = 1.0
    # Forget denoising loss above which the ascent stops, as a multiple of the unseen images'
    # mean loss (of the retain images' where the model has no unseen ones).
    cap_ratio: Annotated[float, Field(gt=0, le=100)] = 1.0


class DiffusionRun(GradientRun):
    """A GradientRun whose before/after figures are the fixed-timestep denoising losses."""

    def __init__(self, method: str, call: MethodCall[Any], config: DiffusionConfig) -> None:
        self.family_config = call.family_config
        self.progress = call.progress
        super().__init__(method, call, config)
        self.config: DiffusionConfig = config
        generator_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        self.noise_generator = torch.Generator().manual_seed(generator_seed)
        self.forget_batches = cycled_batches(self.data.n_forget, config.forget_batch_size, self.generator)
        self.retain_batches = cycled_batches(self.data.n_retain, config.batch_size, self.generator)

    def losses(self) -> dict[str, float | None]:
        return mean_denoising_losses(self.network, self.family_config, self.data)

    def retain_loss(self) -> torch.Tensor:
        index = next(self.retain_batches)
        images = as_images(take(self.data.retain_x, index), self.family_config)
        noise, timesteps = random_noise_and_timesteps(self.family_config, len(index), self.noise_generator,
                                                      images.device)
        return denoising_losses(self.network, self.family_config, images, take(self.data.retain_y, index),
                                timesteps, noise).mean()

    def forget_steps(self, forget_term: ForgetTerm, *, retain_weight: float = 1.0,
                     masks: Sequence[torch.Tensor] | None = None) -> None:
        """The loop both methods share: `steps` optimiser steps, each on a forget batch (its
        indices and images, given to `forget_term`, which returns the forget part of the loss,
        signed and weighted) plus `retain_weight` × the retain batch's denoising loss, under the
        gradient `masks` where given."""
        with self.training():
            for step in range(self.config.steps):
                index = next(self.forget_batches)
                forget = forget_term(index, as_images(take(self.data.forget_x, index), self.family_config))
                self.descend(retain_weight * self.retain_loss() + forget, masks=masks)
                report(self.progress, (step + 1) / self.config.steps, self.method)


@torch.no_grad()
def mean_denoising_losses(network: nn.Module, config: Any, data: ForgetRetain) -> dict[str, float | None]:
    was_training = network.training
    network.eval()
    found: dict[str, float | None] = {
        part: float(fixed_timestep_losses(network, config, getattr(data, f"{part}_x")[:256],
                                          getattr(data, f"{part}_y")[:256]).mean())
        for part in ("forget", "retain")}
    if data.unseen_x is not None and data.unseen_y is not None and len(data.unseen_y):
        found["unseen"] = float(fixed_timestep_losses(network, config, data.unseen_x[:256], data.unseen_y[:256]).mean())
    network.train(was_training)
    return {f"{part}_loss": value for part, value in found.items()}


def forget_saliency(network: nn.Module, config: Any, data: ForgetRetain, fraction: float) -> list[torch.Tensor]:
    network.zero_grad(set_to_none=True)
    fixed_timestep_losses(network, config, data.forget_x, data.forget_y).mean().backward()
    return saliency_masks_from(network, fraction)


class DiffusionSalUn(MethodHooks):
    name = "salun"
    config_class = DiffusionSalUnConfig
    description = "Image diffusion: steer the forget images' denoising towards retained images, salient weights only."
    repairable = False

    def run(self, call: MethodCall[DiffusionSalUnConfig]) -> MethodOutput:
        config = call.config or DiffusionSalUnConfig()
        run = DiffusionRun(self.name, call, config)
        network, data, family_config = run.network, run.data, call.family_config
        masks = forget_saliency(network, family_config, data, config.mask_fraction)
        alphas = noise_levels(family_config).to(data.forget_x.device)
        conditional = bool(family_config.conditional)
        n_classes = class_count(network)

        def steered_loss(forget_index: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
            # Another target per forget image: a retained image (of another label when the
            # model is conditional, which SalUn's class-wise forgetting maps to).
            target_index = torch.randint(0, data.n_retain, (len(forget_index),), generator=run.generator)
            target = as_images(take(data.retain_x, target_index), family_config)
            labels = take(data.forget_y, forget_index)
            if conditional and n_classes > 1:
                shift = torch.randint(1, n_classes, labels.shape, generator=run.generator).to(labels.device)
                labels = (labels + shift) % n_classes
            noise, timesteps = random_noise_and_timesteps(family_config, len(forget_index), run.noise_generator,
                                                          forget.device)
            a = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = a.sqrt() * forget + (1 - a).sqrt() * noise
            # The noise that makes this noisy forget image denoise to the target instead.
            steered = (noisy - a.sqrt() * target) / (1 - a).sqrt()
            predicted: torch.Tensor = network(noisy, timesteps, class_labels=labels if conditional else None).sample
            return config.forget_weight * (predicted - steered).square().mean()

        run.forget_steps(steered_loss, masks=masks)
        return run.result(masked_weights=int(sum(int(m.sum()) for m in masks)),
                          total_weights=int(sum(m.numel() for m in masks)))


class DiffusionGradientDifference(MethodHooks):
    name = "gradient_difference"
    config_class = DiffusionGradientDifferenceConfig
    description = "Image diffusion: ascend the forget images' denoising loss (capped) while descending the retain loss."
    repairable = False

    def run(self, call: MethodCall[DiffusionGradientDifferenceConfig]) -> MethodOutput:
        config = call.config or DiffusionGradientDifferenceConfig()
        run = DiffusionRun(self.name, call, config)
        network, data, family_config = run.network, run.data, call.family_config
        reference = run.before.get("unseen_loss") or run.before["retain_loss"]
        cap = config.cap_ratio * float(reference or 1.0)
        scoring = fixed_noise(family_config)[1].to(data.forget_x.device)
        capped = 0

        def capped_ascent(forget_index: torch.Tensor, forget_images: torch.Tensor) -> torch.Tensor:
            nonlocal capped
            # The scoring timesteps (the cap is measured at them), with fresh noise.
            noise, _ = random_noise_and_timesteps(family_config, len(forget_index), run.noise_generator,
                                                  forget_images.device)
            timesteps = scoring[torch.randint(0, len(scoring), (len(forget_index),), generator=run.generator)]
            forget = denoising_losses(network, family_config, forget_images, take(data.forget_y, forget_index),
                                      timesteps, noise).mean()
            capped += int(forget.item() >= cap)
            return -config.forget_weight * torch.clamp(forget, max=cap)

        run.forget_steps(capped_ascent, retain_weight=config.retain_weight)
        return run.result(forget_loss_cap=cap, capped_steps=capped)
