"""Hyper-parameters of the built-in families (torch-free; implementations live in workers)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


# Architectures a transformers config given in params may build (imported bases are checked by
# their own config.json).
HF_ARCHITECTURES = ("gpt2", "llama", "qwen2")


@dataclass(config=_STRICT)
class LoRAConfig:
    # Rank r of each adapter's update B·A, its scale alpha / r, and dropout on its input.
    r: Annotated[int, Field(ge=1, le=1024)] = 8
    alpha: Annotated[float, Field(gt=0, le=100_000)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Module names the adapters wrap; None: peft's default for the architecture (gpt2: c_attn;
    # llama and qwen2: q_proj and v_proj). Over an imported base only the adapters are stored;
    # over a model built from a config its seeded base is stored with them.
    target_modules: Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(min_length=1, max_length=64)] | None = None


@dataclass(config=_STRICT)
class HFCausalLMConfig:
    # A Hugging Face transformers causal language model (workers/engine/families/hf_causal_lm.py):
    # either built from `config` (a transformers config of a gpt2, llama or qwen2 model) or an
    # imported base (`base`), fine-tuned fully or through LoRA adapters (`lora`).
    config: dict[str, Any] | None = None
    base: str | None = None
    # Set by the service from the imported base: its model version, the sha256 of its stored
    # archive (the worker fetches it by this digest) and its architecture (config.json model_type).
    base_id: str | None = None
    base_archive_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    architecture: str | None = None
    lora: LoRAConfig | None = None
    # Tokens of a model built from `config`: the 256 byte values plus BOS and EOS ("byte"); a base
    # brings its own tokenizer.
    tokenizer: Literal["byte"] = "byte"
    block_size: Annotated[int, Field(ge=4, le=8192)] = 64
    steps: PositiveInt = 200
    batch_size: PositiveInt = 16
    learning_rate: LearningRate = 5e-4

    def __post_init__(self) -> None:
        if (self.config is None) == (self.base is None and self.base_archive_sha256 is None):
            raise ValueError("give either config (a transformers config) or base (an imported model version)")
        if self.config is not None and self.config.get("model_type") not in HF_ARCHITECTURES:
            raise ValueError(f"config.model_type must be one of {', '.join(HF_ARCHITECTURES)}")


# Byte-level tokens: the 256 byte values (0–255), then begin-of-text and end-of-text.
BOS_TOKEN = 256
EOS_TOKEN = 257
LM_VOCAB = 258
LM_METHODS = ("retrain", "sisa", "gradient_difference", "npo")


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

def hf_causal_lm_tokens(config: HFCausalLMConfig, rows: int) -> int:
    return config.steps * config.batch_size * config.block_size


HF_CAUSAL_LM = FamilySpec(
    name="hf_causal_lm",
    config_class=HFCausalLMConfig,
    implementation="workers.engine.families.hf_causal_lm:HFCausalLMFamily",
    description="Hugging Face transformers causal language model (gpt2, llama, qwen2), from a config or an "
                "imported base, fully fine-tuned or through LoRA adapters: generate and score.",
    positions_seen=hf_causal_lm_tokens,
    data_kind="text",
    methods=LM_METHODS,
)

BUILTIN_FAMILIES = (LOGISTIC_REGRESSION, MLP_CLASSIFIER, CNN_CLASSIFIER, CAUSAL_LM, HF_CAUSAL_LM)
