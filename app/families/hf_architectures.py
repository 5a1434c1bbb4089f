"""The transformers architectures a Hugging Face language model may have (gpt2, llama, qwen2),
described without transformers or torch: which configuration values matter, their defaults, and
the exact tensors `save_pretrained` writes for `AutoModelForCausalLM`, so that the API counts
parameters for the model budgets and checks an imported checkpoint's shapes before anything is
stored or queued (docs/byo-language-model.md).

The defaults are those of transformers' own configuration classes; tests/families compares the
counts with transformers' for several configurations of each architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ARCHITECTURES = ("gpt2", "llama", "qwen2")
# Configuration keys that would make transformers load code from the checkpoint.
REMOTE_CODE_KEYS = ("auto_map",)
# Far above any real model's dimension; a larger one is a hostile or broken configuration.
MAX_DIMENSION = 2**24

# Each architecture's integer settings and their defaults (None: derived, see `_derived`), and
# its boolean settings.
_INTS: dict[str, dict[str, int | None]] = {
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None,
              "max_position_embeddings": 2048},
    # Qwen2's key-value heads default to 32 whatever the attention heads (transformers' default).
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": None,
              "max_position_embeddings": 32768},
}
_BOOLS: dict[str, dict[str, bool]] = {
    "gpt2": {"tie_word_embeddings": True},
    "llama": {"tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False},
    "qwen2": {"tie_word_embeddings": False},
}
# The linear layers LoRA may adapt, as peft names them (a name matches every layer ending in it),
# and peft's default targets for each architecture.
LORA_MODULES = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
LORA_DEFAULT_TARGETS = {"gpt2": ("c_attn",), "llama": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj")}


class ArchitectureError(ValueError):
    """The configuration is not one of the supported architectures, or not a valid one; the
    message names settings by the architecture's own keys, never by text from the input."""


@dataclass(frozen=True)
class Architecture:
    """The settings of one configuration that decide its tensors, defaults filled in."""

    model_type: str
    ints: Mapping[str, int]
    bools: Mapping[str, bool]

    @property
    def vocab_size(self) -> int:
        return self.ints["vocab_size"]

    @property
    def layers(self) -> int:
        return self.ints["n_layer" if self.model_type == "gpt2" else "num_hidden_layers"]

    @property
    def width(self) -> int:
        return self.ints["n_embd" if self.model_type == "gpt2" else "hidden_size"]

    @property
    def heads(self) -> int:
        return self.ints["n_head" if self.model_type == "gpt2" else "num_attention_heads"]

    @property
    def inner(self) -> int:
        return self.ints["n_inner" if self.model_type == "gpt2" else "intermediate_size"]

    @property
    def positions(self) -> int:
        return self.ints["n_positions" if self.model_type == "gpt2" else "max_position_embeddings"]

    @property
    def tied(self) -> bool:
        return self.bools["tie_word_embeddings"]

    def to_json(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **self.ints, **self.bools}

    def with_vocab(self, vocab_size: int) -> "Architecture":
        return Architecture(self.model_type, {**self.ints, "vocab_size": vocab_size}, self.bools)


def parse(config: Mapping[str, Any]) -> Architecture:
    """The architecture of a transformers configuration (a config.json's object, or the `config`
    of a model's params); other keys are left to transformers."""
    if not isinstance(config, Mapping):
        raise ArchitectureError("The configuration must be a JSON object.")
    if any(key in config for key in REMOTE_CODE_KEYS):
        raise ArchitectureError("The configuration names custom code (auto_map); remote code is never run.")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ArchitectureError(f"model_type must be one of {', '.join(ARCHITECTURES)}.")
    ints: dict[str, int] = {}
    for key, default in _INTS[model_type].items():
        value = config.get(key, default)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
            raise ArchitectureError(f"{key} must be an integer from 1 to {MAX_DIMENSION}.")
        ints[key] = value
    bools: dict[str, bool] = {}
    for key, default in _BOOLS[model_type].items():
        value = config.get(key, default)
        if not isinstance(value, bool):
            raise ArchitectureError(f"{key} must be true or false.")
        bools[key] = value
    return Architecture(model_type, _derived(model_type, ints), bools)


def _derived(model_type: str, ints: dict[str, int]) -> dict[str, int]:
    if model_type == "gpt2":
        if ints["n_embd"] % ints["n_head"]:
            raise ArchitectureError("n_embd must be a multiple of n_head.")
        return {**ints, "n_inner": ints.get("n_inner", 4 * ints["n_embd"])}
    heads = ints["num_attention_heads"]
    kv_heads = ints.get("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ArchitectureError("num_attention_heads must be a multiple of num_key_value_heads.")
    if "head_dim" not in ints and ints["hidden_size"] % heads:
        raise ArchitectureError("hidden_size must be a multiple of num_attention_heads.")
    return {**ints, "num_key_value_heads": kv_heads, "head_dim": ints.get("head_dim", ints["hidden_size"] // heads)}


def _linear(name: str, outputs: int, inputs: int, bias: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{name}.weight": (outputs, inputs)}
    if bias:
        shapes[f"{name}.bias"] = (outputs,)
    return shapes


def tensor_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Name → shape of every parameter `save_pretrained` writes for the causal LM (the output
    projection only when it is not tied to the embeddings)."""
    vocab, width, inner = arch.vocab_size, arch.width, arch.inner
    if arch.model_type == "gpt2":
        # GPT-2's Conv1D stores its weight as (inputs, outputs).
        shapes: dict[str, tuple[int, ...]] = {
            "transformer.wte.weight": (vocab, width), "transformer.wpe.weight": (arch.positions, width),
            "transformer.ln_f.weight": (width,), "transformer.ln_f.bias": (width,),
        }
        for i in range(arch.layers):
            block = f"transformer.h.{i}."
            for norm in ("ln_1", "ln_2"):
                shapes |= {f"{block}{norm}.weight": (width,), f"{block}{norm}.bias": (width,)}
            for name, inputs, outputs in _gpt2_projections(arch):
                shapes |= {f"{block}{name}.weight": (inputs, outputs), f"{block}{name}.bias": (outputs,)}
    else:
        shapes = {"model.embed_tokens.weight": (vocab, width), "model.norm.weight": (width,)}
        attention_bias = arch.bools.get("attention_bias", False)
        mlp_bias = arch.bools.get("mlp_bias", False)
        qkv_bias = arch.model_type == "qwen2" or attention_bias
        for i in range(arch.layers):
            block = f"model.layers.{i}."
            for name, inputs, outputs in _decoder_projections(arch):
                bias = (qkv_bias if name[-6:] in ("q_proj", "k_proj", "v_proj") else
                        attention_bias if name.endswith("o_proj") else mlp_bias)
                shapes |= _linear(f"{block}{name}", outputs, inputs, bias)
            shapes |= {f"{block}input_layernorm.weight": (width,), f"{block}post_attention_layernorm.weight": (width,)}
    if not arch.tied:
        shapes["lm_head.weight"] = (vocab, width)
    return shapes


def _gpt2_projections(arch: Architecture) -> list[tuple[str, int, int]]:
    width, inner = arch.width, arch.inner
    return [("attn.c_attn", width, 3 * width), ("attn.c_proj", width, width),
            ("mlp.c_fc", width, inner), ("mlp.c_proj", inner, width)]


def _decoder_projections(arch: Architecture) -> list[tuple[str, int, int]]:
    width, inner = arch.width, arch.inner
    query = arch.heads * arch.ints["head_dim"]
    key_value = arch.ints["num_key_value_heads"] * arch.ints["head_dim"]
    return [("self_attn.q_proj", width, query), ("self_attn.k_proj", width, key_value),
            ("self_attn.v_proj", width, key_value), ("self_attn.o_proj", query, width),
            ("mlp.gate_proj", width, inner), ("mlp.up_proj", width, inner), ("mlp.down_proj", inner, width)]


def buffer_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Buffers older GPT-2 checkpoints carry beside the parameters (the causal mask): allowed in
    an import, never counted as parameters."""
    if arch.model_type != "gpt2":
        return {}
    mask = (1, 1, arch.positions, arch.positions)
    return {f"transformer.h.{i}.attn.{name}": shape for i in range(arch.layers)
            for name, shape in (("bias", mask), ("masked_bias", ()))}


def lora_shapes(arch: Architecture, r: int, targets: tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """The adapter's tensors: A (r × inputs) and B (outputs × r) for every linear layer whose
    name ends in one of `targets` (peft's rule), the architecture's default targets when None."""
    wanted = targets or LORA_DEFAULT_TARGETS[arch.model_type]
    unknown = [name for name in wanted if name not in LORA_MODULES[arch.model_type]]
    if unknown:
        raise ArchitectureError(
            f"lora.target_modules of a {arch.model_type} model are among {', '.join(LORA_MODULES[arch.model_type])}.")
    projections = _gpt2_projections(arch) if arch.model_type == "gpt2" else _decoder_projections(arch)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(arch.layers):
        for name, inputs, outputs in projections:
            if name.rsplit(".", 1)[-1] in wanted:
                shapes |= {f"{i}.{name}.lora_A.weight": (r, inputs), f"{i}.{name}.lora_B.weight": (outputs, r)}
    return shapes


def parameter_count(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def activations(arch: Architecture, block_size: int) -> int:
    """Values one training example of `block_size` tokens keeps for the backward pass: per block
    the norms, attention projections and scores, the MLP's hidden layer, the residual sums; the
    logits over the vocabulary before and after the softmax."""
    tokens, width = block_size, arch.width
    block = tokens * (8 * width + 3 * arch.inner) + 2 * arch.heads * tokens * tokens
    return tokens * width + arch.layers * block + 2 * tokens * arch.vocab_size
