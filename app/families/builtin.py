"""Hyper-parameters of the built-in families (torch-free; implementations live in workers)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from app.families.spec import FamilySpec

_STRICT = ConfigDict(extra="forbid")

PositiveInt = Annotated[int, Field(ge=1, le=100_000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]


@dataclass(config=_STRICT)
class LogisticRegressionConfig:
    # Passes over the training records (per slice under SISA).
    epochs: PositiveInt = 30
    learning_rate: LearningRate = 0.1
    batch_size: PositiveInt = 256
    # L2 strength λ of the objective  mean(loss) + λ/2·‖θ‖². Must be > 0 for certified removal:
    # the Newton update's error bound is proportional to 1/λ.
    l2: Annotated[float, Field(ge=0, le=100)] = 1e-3
    # Standard deviation σ of the loss perturbation b·θ/n (Guo et al. 2020); 0 disables it and
    # with it `certified_newton`.
    perturbation_sigma: Annotated[float, Field(ge=0, le=1e6)] = 1.0
    # Privacy parameters of certified removal; the error budget is derived from them.
    epsilon: Annotated[float, Field(gt=0, le=100)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-4


@dataclass(config=_STRICT)
class MLPConfig:
    # Width of each hidden layer, in order.
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=8192)]], Field(min_length=1, max_length=8)] = (
        Field(default_factory=lambda: [128])
    )
    epochs: PositiveInt = 20
    learning_rate: LearningRate = 1e-3
    batch_size: PositiveInt = 128
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


@dataclass(config=_STRICT)
class CNNConfig:
    # (channels, height, width) of each image; the feature columns are its pixels, row-major.
    image_shape: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=3, max_length=3)] = (
        Field(default_factory=lambda: [1, 8, 8])
    )
    # Output channels of each 3×3 convolution block (conv → ReLU → 2×2 max-pool when it fits).
    channels: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=1, max_length=6)] = (
        Field(default_factory=lambda: [16, 32])
    )
    epochs: PositiveInt = 15
    learning_rate: LearningRate = 1e-3
    batch_size: PositiveInt = 128
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0


@dataclass(config=_STRICT)
class CausalLMConfig:
    # A decoder-only transformer over bytes (workers/engine/families/causal_lm.py). The defaults
    # train a useful model on a few MB of text in minutes on 2 CPU cores; tests use far less.
    # Transformer blocks, attention heads per block, and the width of the residual stream
    # (a multiple of n_head).
    n_layer: Annotated[int, Field(ge=1, le=48)] = 2
    n_head: Annotated[int, Field(ge=1, le=64)] = 4
    n_embd: Annotated[int, Field(ge=4, le=8192)] = 128
    # Context length in tokens; longer records train as consecutive windows, and are scored
    # with a sliding window.
    block_size: Annotated[int, Field(ge=4, le=8192)] = 128
    # Optimiser steps (AdamW) over seeded mini-batches of windows; SISA gives each slice a share.
    steps: PositiveInt = 1500
    learning_rate: LearningRate = 3e-3
    batch_size: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


@dataclass(config=_STRICT)
class ImageDiffusionConfig:
    # A DDPM on diffusers' UNet2DModel and DDPMScheduler (workers/engine/families/image_diffusion.py).
    # Square images of image_size pixels and `channels` channels (1: grey, 3: RGB); the dataset's
    # images must have this size.
    image_size: Annotated[int, Field(ge=4, le=512)] = 16
    channels: Annotated[int, Field(ge=1, le=4)] = 1
    # Output channels of each resolution level of the U-Net (each level but the last halves the
    # image), and residual blocks per level.
    block_out_channels: Annotated[list[Annotated[int, Field(ge=4, le=1024)]], Field(min_length=1, max_length=5)] = (
        Field(default_factory=lambda: [32, 64])
    )
    layers_per_block: Annotated[int, Field(ge=1, le=4)] = 1
    # Steps of the noise schedule (cosine) the network learns to reverse.
    num_train_timesteps: Annotated[int, Field(ge=2, le=4000)] = 100
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    learning_rate: LearningRate = 1e-3
    # Condition the U-Net on the dataset's label (a class embedding), so /sample can ask for one.
    conditional: bool = False
    # Denoising steps of /sample when the request names none.
    sample_steps: Annotated[int, Field(ge=1, le=4000)] = 50

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2 for each level of the U-Net "
                             f"after the first ({len(self.block_out_channels) - 1})")


# Byte-level tokens: the 256 byte values (0–255), then begin-of-text and end-of-text.
BOS_TOKEN = 256
EOS_TOKEN = 257
LM_VOCAB = 258
LM_METHODS = ("retrain", "sisa", "gradient_difference", "npo")
# Image diffusion: the exact methods, and the diffusion variants of salun and gradient_difference.
IMAGE_METHODS = ("retrain", "sisa", "salun", "gradient_difference")


# Tensor names and shapes of each network's state dict (workers/engine/families/); a test builds
# the torch networks and compares.


def _linear(name: str, outputs: int, inputs: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}weight": (outputs, inputs), f"{name}bias": (outputs,)}


def logistic_shapes(config: LogisticRegressionConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    return _linear("", n_classes, n_features)


def mlp_shapes(config: MLPConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    index, width = 0, n_features
    for hidden in config.hidden:
        shapes |= _linear(f"{index}.", hidden, width)
        index, width = index + (3 if config.dropout > 0 else 2), hidden  # Linear, ReLU[, Dropout]
    return shapes | _linear(f"{index}.", n_classes, width)


def cnn_shapes(config: CNNConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    channels, height, width = config.image_shape
    shapes: dict[str, tuple[int, ...]] = {}
    index = 1  # after Unflatten
    for out_channels in config.channels:
        shapes |= {f"{index}.weight": (out_channels, channels, 3, 3), f"{index}.bias": (out_channels,)}
        index += 2  # Conv2d, ReLU
        if height >= 2 and width >= 2:
            index, height, width = index + 1, height // 2, width // 2  # MaxPool2d
        channels = out_channels
    return shapes | _linear(f"{index + 1}.", n_classes, channels * height * width)  # after Flatten


def causal_lm_shapes(config: CausalLMConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    width = config.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (LM_VOCAB, width), "wpe.weight": (config.block_size, width),
        "ln_f.weight": (width,), "ln_f.bias": (width,), "lm_head.weight": (LM_VOCAB, width),
    }
    for i in range(config.n_layer):
        block = f"h.{i}."
        shapes |= {f"{block}ln_1.weight": (width,), f"{block}ln_1.bias": (width,),
                   f"{block}ln_2.weight": (width,), f"{block}ln_2.bias": (width,)}
        shapes |= _linear(f"{block}attn.c_attn.", 3 * width, width) | _linear(f"{block}attn.c_proj.", width, width)
        shapes |= _linear(f"{block}mlp.c_fc.", 4 * width, width) | _linear(f"{block}mlp.c_proj.", width, 4 * width)
    return shapes


def group_norm_groups(config: ImageDiffusionConfig) -> int:
    """GroupNorm groups of the U-Net: the largest of 32, 16, 8, 4, 2, 1 dividing every width."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in config.block_out_channels))


def _resnet(name: str, inputs: int, outputs: int, time_width: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"{name}norm1.weight": (inputs,), f"{name}norm1.bias": (inputs,),
              f"{name}conv1.weight": (outputs, inputs, 3, 3), f"{name}conv1.bias": (outputs,),
              **_linear(f"{name}time_emb_proj.", outputs, time_width),
              f"{name}norm2.weight": (outputs,), f"{name}norm2.bias": (outputs,),
              f"{name}conv2.weight": (outputs, outputs, 3, 3), f"{name}conv2.bias": (outputs,)}
    if inputs != outputs:
        shapes |= {f"{name}conv_shortcut.weight": (outputs, inputs, 1, 1), f"{name}conv_shortcut.bias": (outputs,)}
    return shapes


def image_diffusion_shapes(config: ImageDiffusionConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """diffusers' UNet2DModel with DownBlock2D/UpBlock2D levels and no attention."""
    widths, layers, channels = config.block_out_channels, config.layers_per_block, config.channels
    time_width = 4 * widths[0]
    shapes: dict[str, tuple[int, ...]] = {
        "conv_in.weight": (widths[0], channels, 3, 3), "conv_in.bias": (widths[0],),
        **_linear("time_embedding.linear_1.", time_width, widths[0]),
        **_linear("time_embedding.linear_2.", time_width, time_width),
    }
    if config.conditional:
        shapes["class_embedding.weight"] = (n_classes, time_width)
    last = len(widths) - 1
    previous = widths[0]
    for level, width in enumerate(widths):
        for j in range(layers):
            shapes |= _resnet(f"down_blocks.{level}.resnets.{j}.", previous if j == 0 else width, width, time_width)
        if level < last:
            shapes |= {f"down_blocks.{level}.downsamplers.0.conv.weight": (width, width, 3, 3),
                       f"down_blocks.{level}.downsamplers.0.conv.bias": (width,)}
        previous = width
    for j in range(2):
        shapes |= _resnet(f"mid_block.resnets.{j}.", widths[-1], widths[-1], time_width)
    reversed_widths = list(reversed(widths))
    output = reversed_widths[0]
    for level, width in enumerate(reversed_widths):
        prior, output = output, width
        skip_of_last = reversed_widths[min(level + 1, last)]
        for j in range(layers + 1):
            inputs = (prior if j == 0 else width) + (skip_of_last if j == layers else width)
            shapes |= _resnet(f"up_blocks.{level}.resnets.{j}.", inputs, width, time_width)
        if level < last:
            shapes |= {f"up_blocks.{level}.upsamplers.0.conv.weight": (width, width, 3, 3),
                       f"up_blocks.{level}.upsamplers.0.conv.bias": (width,)}
    return shapes | {"conv_norm_out.weight": (widths[0],), "conv_norm_out.bias": (widths[0],),
                     "conv_out.weight": (channels, widths[0], 3, 3), "conv_out.bias": (channels,)}


# Training budgets (app/families/budget.py): activations one example keeps for the backward pass,
# and the positions training processes. Tabular families see every record once per epoch; the
# language model sees steps × batch_size windows of block_size tokens.


def logistic_activations(config: LogisticRegressionConfig, n_features: int, n_classes: int) -> int:
    return n_features + 2 * n_classes  # input, logits, softmax


def mlp_activations(config: MLPConfig, n_features: int, n_classes: int) -> int:
    return n_features + 3 * sum(config.hidden) + 2 * n_classes  # Linear, ReLU, dropout mask


def cnn_activations(config: CNNConfig, n_features: int, n_classes: int) -> int:
    channels, height, width = config.image_shape
    total = channels * height * width
    for out_channels in config.channels:
        total += 2 * out_channels * height * width  # convolution, ReLU
        if height >= 2 and width >= 2:
            height, width = height // 2, width // 2
            total += out_channels * height * width  # max-pool
    return total + 2 * n_classes


def causal_lm_activations(config: CausalLMConfig, n_features: int, n_classes: int) -> int:
    tokens, width = config.block_size, config.n_embd
    # Per block: two layer norms, q/k/v, attention output and projection, the MLP's 4× hidden
    # layer before and after GELU, two residual sums; attention weights before and after softmax.
    block = tokens * width * 16 + 2 * config.n_head * tokens * tokens
    return tokens * width + config.n_layer * block + 2 * tokens * LM_VOCAB


def image_diffusion_activations(config: ImageDiffusionConfig, n_features: int, n_classes: int) -> int:
    # Each residual block keeps about 8 maps of its width (two norms, activations, convolutions,
    # the time projection's sum); the down path runs layers_per_block blocks per level, the up
    # path one more, the middle two; the input, noise and prediction are 3 images.
    size, layers = config.image_size, config.layers_per_block
    total = 3 * config.channels * size * size
    for level, width in enumerate(config.block_out_channels):
        side = size // 2 ** level
        total += 8 * width * side * side * (2 * layers + 1)
    side = size // 2 ** (len(config.block_out_channels) - 1)
    return total + 16 * config.block_out_channels[-1] * side * side


def epochs_over_rows(config: LogisticRegressionConfig | MLPConfig | CNNConfig | ImageDiffusionConfig, rows: int) -> int:
    return config.epochs * rows


def causal_lm_tokens(config: CausalLMConfig, rows: int) -> int:
    return config.steps * config.batch_size * config.block_size


LOGISTIC_REGRESSION = FamilySpec(
    name="logistic_regression",
    config_class=LogisticRegressionConfig,
    implementation="workers.engine.families.logistic:LogisticRegressionFamily",
    description="Multinomial logistic regression with L2; supports certified Newton removal.",
    convex=True,
    parameter_shapes=logistic_shapes,
    activations=logistic_activations,
    positions_seen=epochs_over_rows,
)
MLP_CLASSIFIER = FamilySpec(
    name="mlp_classifier",
    config_class=MLPConfig,
    implementation="workers.engine.families.mlp:MLPFamily",
    description="Fully connected classifier with ReLU hidden layers.",
    parameter_shapes=mlp_shapes,
    activations=mlp_activations,
    positions_seen=epochs_over_rows,
)
CNN_CLASSIFIER = FamilySpec(
    name="cnn_classifier",
    config_class=CNNConfig,
    implementation="workers.engine.families.cnn:CNNFamily",
    description="Small convolutional classifier over images given as flat pixel columns.",
    parameter_shapes=cnn_shapes,
    activations=cnn_activations,
    positions_seen=epochs_over_rows,
)

CAUSAL_LM = FamilySpec(
    name="causal_lm",
    config_class=CausalLMConfig,
    implementation="workers.engine.families.causal_lm:CausalLMFamily",
    description="Decoder-only transformer over byte-level tokens, for text datasets: generate and score.",
    parameter_shapes=causal_lm_shapes,
    activations=causal_lm_activations,
    positions_seen=causal_lm_tokens,
    data_kind="text",
    methods=LM_METHODS,
)

IMAGE_DIFFUSION = FamilySpec(
    name="image_diffusion",
    config_class=ImageDiffusionConfig,
    implementation="workers.engine.families.image_diffusion:ImageDiffusionFamily",
    description="Denoising diffusion (DDPM) on a diffusers U-Net, for image datasets: sample and score images.",
    parameter_shapes=image_diffusion_shapes,
    activations=image_diffusion_activations,
    positions_seen=epochs_over_rows,
    data_kind="image",
    methods=IMAGE_METHODS,
)

BUILTIN_FAMILIES = (LOGISTIC_REGRESSION, MLP_CLASSIFIER, CNN_CLASSIFIER, CAUSAL_LM, IMAGE_DIFFUSION)
