"""Hyper-parameters of the built-in families (torch-free; implementations live in workers)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from app.families import hf_architectures as hf
from app.families.spec import FamilySpec


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())

_STRICT = ConfigDict(extra="forbid")

# Groups of every group normalisation of the image U-Net; its widths are multiples of it.
GROUP_NORM_GROUPS = 8
# Channels per attention head in the U-Net's middle block.
ATTENTION_HEAD_DIM = 8
# Timesteps at which an image's denoising loss is measured (image_score_timesteps).
SCORE_TIMESTEPS = 8

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
    # A DDPM over images of image_size × image_size pixels with `channels` channels (1: grey, 3:
    # RGB); they must be the dataset's (Dataset.image_size). The U-Net is diffusers'
    # UNet2DModel built from `unet_kwargs` below: one resolution per width of
    # block_out_channels, halving between them, `layers_per_block` residual blocks each.
    image_size: Annotated[int, Field(ge=4, le=1024)] = 16
    channels: Annotated[int, Field(ge=1, le=3)] = 1
    block_out_channels: Annotated[
        list[Annotated[int, Field(ge=GROUP_NORM_GROUPS, le=1024, multiple_of=GROUP_NORM_GROUPS)]],
        Field(min_length=1, max_length=5),
    ] = Field(default_factory=lambda: [32, 64])
    layers_per_block: Annotated[int, Field(ge=1, le=4)] = 1
    # Steps of the forward noising process (DDPMScheduler, cosine schedule).
    num_train_timesteps: Annotated[int, Field(ge=2, le=4000)] = 100
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    learning_rate: LearningRate = 1e-3
    # Label-conditioned through a class embedding (the dataset needs a label column).
    conditional: bool = False
    # Denoising steps of /sample when the call does not say (at most num_train_timesteps).
    sample_steps: Annotated[int, Field(ge=1, le=4000)] = 50

    def __post_init__(self) -> None:
        if self.channels == 2:
            raise ValueError("channels is 1 (grey) or 3 (RGB)")
        halvings = len(self.block_out_channels) - 1
        if self.image_size % (2 ** halvings):
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2^{halvings}, "
                             "one halving between consecutive block_out_channels")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError("sample_steps must be at most num_train_timesteps")


@dataclass(config=_STRICT)
class LoraConfig:
    # Rank and scale (alpha / r) of the low-rank update of each adapted layer (peft's LoRA).
    r: Annotated[int, Field(ge=1, le=1024)] = 8
    alpha: Annotated[int, Field(ge=1, le=4096)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Names of the linear layers to adapt, as peft matches them (by their last component); None
    # takes the architecture's default (hf_architectures.LORA_DEFAULT_TARGETS).
    target_modules: Annotated[list[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]], Field(min_length=1, max_length=8)] | None = None


# Parameters of an hf_causal_lm model's params that the service fills in from the imported base
# it names (app/models/bases.py); a caller never gives them.
RESOLVED_BASE_FIELDS = ("base_id", "base_archive_sha256", "architecture", "base_config")


@dataclass(config=_STRICT)
class HFCausalLMConfig:
    # A Hugging Face transformers causal language model (workers/engine/families/hf_causal_lm.py):
    # either built from a transformers configuration (`config`, model_type gpt2, llama or qwen2),
    # or fine-tuned from an imported base (`base`, its name). Exactly one of the two.
    config: dict[str, Any] | None = None
    base: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")] | None = None
    # Fine-tune through a LoRA adapter (the base frozen) instead of every weight.
    lora: LoraConfig | None = None
    # A model built from a configuration reads plain bytes (the 256 byte values with begin- and
    # end-of-text); a base keeps its own tokenizer. A tokenizer trained on the dataset would hold
    # the subjects' text in its merges, and an erasure would have to retrain it with every shard.
    tokenizer: Literal["byte"] = "byte"
    block_size: Annotated[int, Field(ge=4, le=8192)] = 64
    steps: PositiveInt = 200
    batch_size: PositiveInt = 16
    learning_rate: LearningRate = 5e-4
    # Filled in from the base (RESOLVED_BASE_FIELDS): its id, the sha256 of its stored archive
    # (the worker fetches the base by it), its model_type and its architecture's settings.
    base_id: str | None = None
    base_archive_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    architecture: str | None = None
    base_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.config is None) == (self.base is None):
            raise ValueError("give exactly one of config (a model from scratch) and base (an imported base's name)")
        arch = self.arch()
        if arch is not None:
            if self.block_size > arch.positions:
                raise ValueError(f"block_size is at most the architecture's {arch.positions} positions")
            if self.lora is not None:
                hf.lora_shapes(arch, self.lora.r, tuple(self.lora.target_modules or ()) or None)

    def arch(self) -> hf.Architecture | None:
        """The network's architecture: the base's once resolved (None before), or the
        configuration's with the vocabulary of its tokenizer."""
        if self.config is None:
            return hf.parse(self.base_config) if self.base_config is not None else None
        return hf.parse(self.config).with_vocab(LM_VOCAB)


# Byte-level tokens: the 256 byte values (0–255), then begin-of-text and end-of-text.
BOS_TOKEN = 256
EOS_TOKEN = 257
LM_VOCAB = 258
LM_METHODS = ("retrain", "sisa", "gradient_difference", "npo")
# The worker side runs the diffusion variants of these methods for the image family.
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


def unet_kwargs(config: ImageDiffusionConfig, n_classes: int) -> dict[str, object]:
    """The keyword arguments of diffusers' UNet2DModel for this config: the one definition of the
    network, which the worker builds and `image_diffusion_shapes` counts. Plain residual blocks
    at every resolution, self-attention in the middle block only; a class embedding of
    `n_classes` rows when the model is conditional."""
    widths = tuple(config.block_out_channels)
    return {
        "sample_size": config.image_size, "in_channels": config.channels, "out_channels": config.channels,
        "block_out_channels": widths, "layers_per_block": config.layers_per_block,
        "down_block_types": ("DownBlock2D",) * len(widths), "up_block_types": ("UpBlock2D",) * len(widths),
        "norm_num_groups": GROUP_NORM_GROUPS, "attention_head_dim": ATTENTION_HEAD_DIM,
        "num_class_embeds": n_classes if config.conditional else None,
    }


def _conv(name: str, outputs: int, inputs: int, kernel: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}weight": (outputs, inputs, kernel, kernel), f"{name}bias": (outputs,)}


def _norm(name: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}weight": (width,), f"{name}bias": (width,)}


def _resnet(name: str, inputs: int, outputs: int, time_width: int) -> dict[str, tuple[int, ...]]:
    """diffusers' ResnetBlock2D: norm, conv, time projection, norm, conv, and a 1×1 shortcut
    when the width changes."""
    shapes = _norm(f"{name}norm1.", inputs) | _conv(f"{name}conv1.", outputs, inputs, 3)
    shapes |= _linear(f"{name}time_emb_proj.", outputs, time_width)
    shapes |= _norm(f"{name}norm2.", outputs) | _conv(f"{name}conv2.", outputs, outputs, 3)
    if inputs != outputs:
        shapes |= _conv(f"{name}conv_shortcut.", outputs, inputs, 1)
    return shapes


def _unet_resnets(config: ImageDiffusionConfig) -> list[tuple[str, int, int, int]]:
    """(state-dict prefix, input width, output width, side length of its feature map) of every
    residual block, in UNet2DModel's order: down blocks, up blocks (with their skip
    connections), middle block."""
    widths, size = list(config.block_out_channels), config.image_size
    blocks: list[tuple[str, int, int, int]] = []
    output = widths[0]
    for i, width in enumerate(widths):
        inputs, output = output, width
        side = size // 2 ** i
        blocks += [(f"down_blocks.{i}.resnets.{j}.", inputs if j == 0 else width, width, side)
                   for j in range(config.layers_per_block)]
    reversed_widths = widths[::-1]
    output = reversed_widths[0]
    for i, width in enumerate(reversed_widths):
        previous, output = output, width
        skip_last = reversed_widths[min(i + 1, len(widths) - 1)]
        side = size // 2 ** (len(widths) - 1 - i)
        layers = config.layers_per_block + 1
        for j in range(layers):
            skip = skip_last if j == layers - 1 else width
            blocks.append((f"up_blocks.{i}.resnets.{j}.", (previous if j == 0 else width) + skip, width, side))
    deepest, side = widths[-1], size // 2 ** (len(widths) - 1)
    blocks += [(f"mid_block.resnets.{j}.", deepest, deepest, side) for j in range(2)]
    return blocks


def image_diffusion_shapes(config: ImageDiffusionConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """UNet2DModel(**unet_kwargs(config, n_classes)).state_dict()'s shapes, counted without torch."""
    widths = list(config.block_out_channels)
    first, deepest, time_width = widths[0], widths[-1], 4 * widths[0]
    shapes = _conv("conv_in.", first, config.channels, 3)
    shapes |= _linear("time_embedding.linear_1.", time_width, first) | _linear("time_embedding.linear_2.", time_width, time_width)
    if config.conditional:
        shapes["class_embedding.weight"] = (n_classes, time_width)
    for name, inputs, outputs, _side in _unet_resnets(config):
        shapes |= _resnet(name, inputs, outputs, time_width)
    for i, width in enumerate(widths[:-1]):
        shapes |= _conv(f"down_blocks.{i}.downsamplers.0.conv.", width, width, 3)
    for i, width in enumerate(widths[::-1][:-1]):
        shapes |= _conv(f"up_blocks.{i}.upsamplers.0.conv.", width, width, 3)
    attention = "mid_block.attentions.0."
    shapes |= _norm(f"{attention}group_norm.", deepest)
    for projection in ("to_q.", "to_k.", "to_v.", "to_out.0."):
        shapes |= _linear(f"{attention}{projection}", deepest, deepest)
    return shapes | _norm("conv_norm_out.", first) | _conv("conv_out.", config.channels, first, 3)


def image_diffusion_positions_per_image(config: ImageDiffusionConfig) -> int:
    """One forward pass over one image, in parameter-positions: its multiply-adds divided by the
    parameter count (a convolution's weights are applied at every pixel of its feature map, a
    dense layer's once), so that 2 (forward) or 6 (training) × parameters × positions is the
    usual estimate of floating-point operations."""
    shapes = image_diffusion_shapes(config, 0, 1)
    widths, size, time_width = list(config.block_out_channels), config.image_size, 4 * config.block_out_channels[0]
    macs = 9 * config.channels * widths[0] * size * size * 2  # conv_in and conv_out
    macs += widths[0] * time_width + time_width * time_width
    for _name, inputs, outputs, side in _unet_resnets(config):
        pixels = side * side
        macs += 9 * outputs * (inputs + outputs) * pixels + outputs * time_width
        if inputs != outputs:
            macs += outputs * inputs * pixels
    for i, width in enumerate(widths[:-1]):
        macs += 9 * width * width * (size // 2 ** (i + 1)) ** 2  # stride-2 convolution
    for i, width in enumerate(widths[::-1][:-1]):
        macs += 9 * width * width * (size // 2 ** (len(widths) - 2 - i)) ** 2  # after upsampling
    deepest, pixels = widths[-1], (size // 2 ** (len(widths) - 1)) ** 2
    macs += 4 * deepest * deepest * pixels + 2 * pixels * pixels * deepest  # projections, scores and mixing
    return max(1, math.ceil(macs / parameter_count(shapes)))


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


def epochs_over_rows(config: LogisticRegressionConfig | MLPConfig | CNNConfig, rows: int) -> int:
    return config.epochs * rows


def causal_lm_tokens(config: CausalLMConfig | HFCausalLMConfig, rows: int) -> int:
    return config.steps * config.batch_size * config.block_size


def image_diffusion_activations(config: ImageDiffusionConfig, n_features: int, n_classes: int) -> int:
    """Values one image keeps for the backward pass: per residual block its input, two
    normalisations, two activations and two convolutions; the middle block's attention scores;
    the noisy input, the predicted and the true noise."""
    total = 3 * config.channels * config.image_size ** 2
    for _name, inputs, outputs, side in _unet_resnets(config):
        total += (3 * inputs + 4 * outputs) * side * side
    deepest, pixels = config.block_out_channels[-1], (config.image_size // 2 ** (len(config.block_out_channels) - 1)) ** 2
    heads = max(1, deepest // ATTENTION_HEAD_DIM)
    return total + 2 * heads * pixels * pixels + 5 * deepest * pixels


def image_diffusion_positions(config: ImageDiffusionConfig, rows: int) -> int:
    """Every image once per epoch, one random timestep each, in parameter-positions."""
    return config.epochs * rows * image_diffusion_positions_per_image(config)


def image_score_timesteps(config: ImageDiffusionConfig) -> list[int]:
    """The fixed timesteps at which /score-images measures each image's denoising loss (the
    mean over them is the image's loss): eight, spread evenly over the noise schedule."""
    count = min(SCORE_TIMESTEPS, config.num_train_timesteps)
    return sorted({int((i + 0.5) * config.num_train_timesteps / count) for i in range(count)})


def hf_shapes(config: HFCausalLMConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """The network's parameters, and its LoRA adapter's (named `lora.…`) when it has one."""
    arch = config.arch()
    if arch is None:
        return {}
    shapes = hf.tensor_shapes(arch)
    if config.lora is not None:
        targets = tuple(config.lora.target_modules or ()) or None
        shapes |= {f"lora.{name}": shape for name, shape in hf.lora_shapes(arch, config.lora.r, targets).items()}
    return shapes


def hf_trainable_shapes(config: HFCausalLMConfig, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """What fine-tuning updates: with LoRA the adapter alone (`lora.…`), the base frozen (whether
    imported or built from a config, workers/engine/families/hf_causal_lm.py); else every weight."""
    shapes = hf_shapes(config, n_features, n_classes)
    if config.lora is None:
        return shapes
    return {name: shape for name, shape in shapes.items() if name.startswith("lora.")}


def hf_activations(config: HFCausalLMConfig, n_features: int, n_classes: int) -> int:
    arch = config.arch()
    return hf.activations(arch, config.block_size) if arch is not None else 0


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
    description="DDPM image generator (a diffusers UNet2DModel and DDPMScheduler), for image datasets: sample and score.",
    parameter_shapes=image_diffusion_shapes,
    activations=image_diffusion_activations,
    positions_seen=image_diffusion_positions,
    data_kind="image",
    methods=IMAGE_METHODS,
)

HF_CAUSAL_LM = FamilySpec(
    name="hf_causal_lm",
    config_class=HFCausalLMConfig,
    implementation="workers.engine.families.hf_causal_lm:HFCausalLMFamily",
    description="Hugging Face transformers causal language model (gpt2, llama, qwen2): from a configuration or "
                "fine-tuned from an imported base, fully or through LoRA, for text datasets: generate and score.",
    weight_dtypes=("F32", "F16", "BF16"),
    parameter_shapes=hf_shapes,
    trainable_shapes=hf_trainable_shapes,
    activations=hf_activations,
    positions_seen=causal_lm_tokens,
    data_kind="text",
    methods=LM_METHODS,
)

BUILTIN_FAMILIES = (LOGISTIC_REGRESSION, MLP_CLASSIFIER, CNN_CLASSIFIER, CAUSAL_LM, IMAGE_DIFFUSION, HF_CAUSAL_LM)
