"""Denoising diffusion (Ho et al. 2020, DDPM) on Hugging Face diffusers' `UNet2DModel` and
`DDPMScheduler`, for image datasets.

An image record's "features" are its pixels, channel first and flattened, scaled to [-1, 1]
([n, channels·size·size]), and its "label" the dataset's label (all 0 when unlabelled), so SISA,
the job code and the unlearning methods split, concatenate and select images like tabular rows.

The network predicts the noise added to an image at a timestep t (the ε objective); the noise
schedule is the cosine one (Nichol & Dhariwal 2021), which suits the short schedules small
models train with. Conditioned on a label (`conditional`), the U-Net adds a class embedding to
its timestep embedding.

Everything is deterministic under a seed on CPU: the batch order, the timesteps and the noise of
training come from one seeded generator on the CPU (moved to the network's device), and
sampling draws its starting noise, each image's shard and the scheduler's noise from generators
seeded by the request.

The membership signal of a diffusion model is its denoising loss (Carlini et al. 2023): an image
the network trained on is denoised better. `loss_per_example` measures it at fixed timesteps
with fixed noise, the same for every image and every network, so scores compare across models.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image
from torch import nn
from torch.nn import functional as F

from app.families.builtin import image_score_timesteps, unet_kwargs
from workers.engine.families.base import Shape
from workers.engine.training import derive_seed, network_device

# The noise of the fixed-timestep denoising loss (`loss_per_example`).
SCORE_SEED = 20230130  # Carlini et al., "Extracting Training Data from Diffusion Models"
SAMPLE_BATCH = 256


def scheduler(config: Any) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         clip_sample=True, prediction_type="epsilon")


def image_shape(config: Any) -> tuple[int, int, int]:
    return config.channels, config.image_size, config.image_size


def as_images(features: torch.Tensor, config: Any) -> torch.Tensor:
    """Flat pixel rows [n, c·h·w] → images [n, c, h, w]."""
    return features.reshape(features.shape[0], *image_shape(config))


def denoising_losses(network: nn.Module, config: Any, images: torch.Tensor, labels: torch.Tensor | None,
                     timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted noise, per image [n], differentiable."""
    noisy = scheduler(config).add_noise(images, noise, timesteps)
    predicted = network(noisy, timesteps, class_labels=labels if config.conditional else None).sample
    return F.mse_loss(predicted, noise, reduction="none").mean(dim=(1, 2, 3))


def random_noise_and_timesteps(config: Any, n: int, generator: torch.Generator,
                               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise [n, c, h, w] and timesteps [n], drawn on the CPU (reproducible on any device)."""
    timesteps = torch.randint(0, config.num_train_timesteps, (n,), generator=generator)
    noise = torch.randn((n, *image_shape(config)), generator=generator)
    return noise.to(device), timesteps.to(device)


def fixed_noise(config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring draws: one noise image per fixed timestep (`image_score_timesteps`, spread
    evenly over the schedule), the same for every image and every network."""
    timesteps = torch.tensor(image_score_timesteps(config), dtype=torch.int64)
    generator = torch.Generator().manual_seed(SCORE_SEED)
    return torch.randn((len(timesteps), *image_shape(config)), generator=generator), timesteps


def fixed_timestep_losses(network: nn.Module, config: Any, features: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor:
    """Each image's denoising loss averaged over the fixed draws [n], differentiable."""
    device = network_device(network)
    images = as_images(features.to(device), config)
    labels = labels.to(device)
    noise, timesteps = fixed_noise(config)
    total = torch.zeros(images.shape[0], device=device)
    for k in range(len(timesteps)):
        n = images.shape[0]
        total = total + denoising_losses(network, config, images, labels, timesteps[k].repeat(n).to(device),
                                         noise[k].to(device).expand(n, -1, -1, -1))
    return total / len(timesteps)


# Pixels and PNG.


def pixels_to_features(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 images [n, h, w, c] → flat rows in [-1, 1], channel first."""
    images = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return np.ascontiguousarray(images.reshape(images.shape[0], -1))


def features_to_pixels(images: torch.Tensor) -> npt.NDArray[np.uint8]:
    """Images [n, c, h, w] in [-1, 1] → uint8 [n, h, w, c]."""
    scaled = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


def decode_png(data: bytes, config: Any) -> npt.NDArray[np.uint8]:
    """One stored image (PNG of mode L or RGB) → uint8 [h, w, c], checked against the config."""
    with Image.open(io.BytesIO(data)) as image:
        converted = image.convert("L" if config.channels == 1 else "RGB")
        pixels = np.asarray(converted, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape != (config.image_size, config.image_size, config.channels):
        raise ValueError(f"an image is {pixels.shape[0]}×{pixels.shape[1]}×{pixels.shape[2]}; the model takes "
                         f"{config.image_size}×{config.image_size}×{config.channels}")
    return pixels


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """uint8 [h, w, c] → PNG bytes (mode L for one channel, RGB for three)."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def images_to_features(images: Sequence[bytes], config: Any) -> torch.Tensor:
    if not images:
        return torch.zeros((0, config.channels * config.image_size * config.image_size))
    return torch.from_numpy(pixels_to_features(np.stack([decode_png(data, config) for data in images])))


# Sampling.


def mixture_weights(shard_records: Sequence[int | None] | None, n_networks: int) -> torch.Tensor | None:
    """Each shard's probability of drawing an image: its training records over all of them
    (`Shard.records`, kept with the model version). None, for a uniform choice, where the counts
    are not known (a version written before they were kept), do not match the networks, or are
    all zero (no shard saw a record)."""
    if shard_records is None or len(shard_records) != n_networks or any(c is None or c < 0 for c in shard_records):
        return None
    counts = torch.tensor([float(c) for c in shard_records if c is not None], dtype=torch.float64)
    total = float(counts.sum())
    return counts / total if total > 0 else None


def draw_shards(n: int, n_networks: int, shard_records: Sequence[int | None] | None,
                generator: torch.Generator) -> torch.Tensor:
    """The shard that draws each of `n` images [n]: in proportion to the shards' records, so a
    shard an erasure emptied (0 records) is never drawn; uniform without counts (`mixture_weights`)."""
    weights = mixture_weights(shard_records, n_networks) if n_networks > 1 else None
    if weights is None:
        return torch.randint(0, n_networks, (n,), generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


@torch.no_grad()
def sample(networks: Sequence[nn.Module], config: Any, n: int, *, seed: int, steps: int | None = None,
           label: int | None = None, shard_records: Sequence[int | None] | None = None) -> torch.Tensor:
    """`n` images [n, c, h, w] in [-1, 1] by ancestral DDPM sampling over `steps` denoising steps.

    With several networks (SISA shards) each image is drawn entirely by one shard, chosen with
    probability proportional to the shard's training records (`shard_records`, the counts kept
    with the version; uniformly where they are not known), so the samples follow the mixture of
    the shards' distributions weighted as the data is. The counts are a function of the records
    that stay and of the fixed partition, so after an erasure retrains the shards that held the
    erased records, the mixture is exactly the one of a model that never saw them; and a shard
    the erasure emptied, an untrained network, draws nothing. The starting noise and the shard
    of image i depend only on the seed, i and the counts, the scheduler's noise on the seed and
    the shard."""
    if n <= 0:
        return torch.zeros((0, *image_shape(config)))
    generator = torch.Generator().manual_seed(derive_seed(seed, "sample"))
    start = torch.randn((n, *image_shape(config)), generator=generator)
    chosen = draw_shards(n, len(networks), shard_records, generator)
    # A conditional model asked for no label draws each image's label under the seed.
    labels = (torch.full((n,), int(label), dtype=torch.int64) if label is not None
              else torch.randint(0, class_count(networks[0]), (n,), generator=generator))
    out = torch.empty_like(start)
    for index, network in enumerate(networks):
        mine = torch.nonzero(chosen == index).flatten()
        if len(mine) == 0:
            continue
        network.eval()
        step_generator = torch.Generator().manual_seed(derive_seed(seed, "sample-steps", index))
        for begin in range(0, len(mine), SAMPLE_BATCH):
            part = mine[begin:begin + SAMPLE_BATCH]
            out[part] = _denoise(network, config, start[part], step_generator, steps, labels[part]).cpu()
    return out


def _denoise(network: nn.Module, config: Any, noise: torch.Tensor, generator: torch.Generator, steps: int | None,
             labels: torch.Tensor) -> torch.Tensor:
    device = network_device(network)
    schedule = scheduler(config)
    schedule.set_timesteps(min(steps or config.sample_steps, config.num_train_timesteps))
    images = noise.to(device)
    class_labels = labels.to(device) if config.conditional else None
    for t in schedule.timesteps:
        predicted = network(images, t.to(device), class_labels=class_labels).sample
        # A CPU generator: diffusers draws the step's noise on the CPU and moves it, so a seed
        # gives the same images on any device.
        images = schedule.step(predicted, int(t), images, generator=generator).prev_sample
    return images


class ImageDiffusion:
    name = "image_diffusion"
    data_kind = "image"

    def shape(self, config: Any, n_classes: int = 2) -> Shape:
        channels, height, width = image_shape(config)
        return Shape(n_features=channels * height * width, n_classes=max(n_classes, 2))

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        network = UNet2DModel(**unet_kwargs(config, shape.n_classes))
        # Scoring needs the schedule and the image shape, and the family protocol passes only the
        # network: the config travels with it (a plain attribute, not a weight).
        network.obliviate_config = config
        return network

    def train(self, network: nn.Module, config: Any, features: torch.Tensor, labels: torch.Tensor, *,
              seed: int, epochs: int | None = None) -> None:
        """Adam on the ε objective over shuffled mini-batches, a random timestep and noise per image."""
        n = features.shape[0]
        if n == 0:
            return
        device = network_device(network)
        images, labels = as_images(features.to(device), config), labels.to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        generator = torch.Generator().manual_seed(derive_seed(seed, "diffusion"))
        network.train()
        for _ in range(config.epochs if epochs is None else epochs):
            order = torch.randperm(n, generator=generator)
            for begin in range(0, n, config.batch_size):
                batch = order[begin:begin + config.batch_size].to(device)
                noise, timesteps = random_noise_and_timesteps(config, len(batch), generator, device)
                loss = denoising_losses(network, config, images[batch], labels[batch], timesteps, noise).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        network.eval()

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        raise ValueError("an image_diffusion model answers sample and score-images, not class probabilities")

    def loss_per_example(self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The fixed-timestep denoising loss of each image (`fixed_timestep_losses`)."""
        was_training = network.training
        network.eval()
        with torch.no_grad():
            losses = torch.cat([fixed_timestep_losses(network, config_of(network), features[i:i + SAMPLE_BATCH],
                                                      labels[i:i + SAMPLE_BATCH]).cpu()
                                for i in range(0, features.shape[0], SAMPLE_BATCH)]) if features.shape[0] else \
                torch.zeros(0)
        network.train(was_training)
        return losses

    def evaluate(self, networks: Sequence[nn.Module], features: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """The mean fixed-timestep denoising loss of the images under the networks (their mean);
        accuracy has no meaning here and is None."""
        n = int(labels.shape[0])
        if n == 0:
            return {"accuracy": None, "loss": None, "n": 0}
        return {"accuracy": None, "loss": float(ensemble_losses(networks, features, labels).mean()), "n": n}


def config_of(network: nn.Module) -> Any:
    """The family config a network was built from, kept on it by `ImageDiffusion.build_network`."""
    return network.obliviate_config  # type: ignore[attr-defined]


def ensemble_losses(networks: Sequence[nn.Module], features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's fixed-timestep denoising loss, averaged over the networks (SISA shards) [n]."""
    return torch.stack([ImageDiffusionFamily.loss_per_example(network, features, labels)
                        for network in networks]).mean(dim=0)


def sample_pngs(networks: Sequence[nn.Module], config: Any, n: int, *, seed: int, steps: int | None = None,
                label: int | None = None, shard_records: Sequence[int | None] | None = None) -> list[bytes]:
    """The /sample answer: `n` images as PNG bytes."""
    drawn = sample(networks, config, n, seed=seed, steps=steps, label=label, shard_records=shard_records)
    return [encode_png(pixels) for pixels in features_to_pixels(drawn)]


def score_pngs(networks: Sequence[nn.Module], config: Any, images: Sequence[bytes],
               labels: Sequence[int] | None = None) -> list[float]:
    """The /score-images answer: each image's fixed-timestep denoising loss (lower: more familiar)."""
    features = images_to_features(images, config)
    label_tensor = torch.tensor(list(labels) if labels is not None else [0] * len(images), dtype=torch.int64)
    return ensemble_losses(networks, features, label_tensor).tolist()


ImageDiffusionFamily = ImageDiffusion()


def noise_levels(config: Any) -> torch.Tensor:
    """ᾱ_t of the schedule, per timestep [num_train_timesteps]: x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε."""
    return scheduler(config).alphas_cumprod


def class_count(network: nn.Module) -> int:
    """Labels a conditional network embeds (1 for an unconditional one)."""
    embedding = getattr(network, "class_embedding", None)
    return int(embedding.num_embeddings) if isinstance(embedding, nn.Embedding) else 1
