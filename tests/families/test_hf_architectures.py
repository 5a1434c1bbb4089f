"""Parameter counts and tensor shapes of gpt2, llama and qwen2 configurations, computed by the API
without torch (app/families/hf_architectures.py), against transformers' own models."""

from __future__ import annotations

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from app.families import budget
from app.families import hf_architectures as hf
from app.families.builtin import HFCausalLMConfig
from app.families.registry import FamilyParamsError, get_family

CONFIGS = [
    {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 300, "n_positions": 128},
    {"model_type": "gpt2", "n_layer": 3, "n_embd": 48, "n_head": 4, "n_inner": 100, "vocab_size": 97, "n_positions": 32},
    {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 1, "vocab_size": 258, "n_positions": 64,
     "tie_word_embeddings": False},
    {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 160, "num_attention_heads": 4,
     "vocab_size": 300},
    {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 96, "intermediate_size": 64, "num_attention_heads": 6,
     "num_key_value_heads": 2, "vocab_size": 123, "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True},
    {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
     "head_dim": 32, "vocab_size": 200},
    {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
     "num_key_value_heads": 2, "vocab_size": 300},
    {"model_type": "qwen2", "num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 96, "num_attention_heads": 2,
     "num_key_value_heads": 1, "vocab_size": 77, "tie_word_embeddings": True},
    {"model_type": "qwen2", "num_hidden_layers": 1, "hidden_size": 48, "intermediate_size": 50, "num_attention_heads": 3,
     "num_key_value_heads": 1, "vocab_size": 150},
]


def _model(config: dict):
    settings = {key: value for key, value in config.items() if key != "model_type"}
    return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(config["model_type"], **settings))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['model_type']}-{c.get('n_layer', c.get('num_hidden_layers'))}")
def test_shapes_and_count_match_transformers(config, tmp_path):
    torch.manual_seed(0)
    model = _model(config)
    arch = hf.parse(config)
    assert hf.parameter_count(hf.tensor_shapes(arch)) == sum(p.numel() for p in model.parameters())
    # The names and shapes save_pretrained writes (tied weights once).
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", framework="pt") as saved:
        written = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}
    assert written == hf.tensor_shapes(arch)


@pytest.mark.parametrize("config, targets", [
    (CONFIGS[0], None), (CONFIGS[0], ["c_fc", "c_proj"]), (CONFIGS[4], None), (CONFIGS[4], ["k_proj", "down_proj"]),
    (CONFIGS[6], None), (CONFIGS[6], ["o_proj", "gate_proj", "up_proj"]),
], ids=lambda value: value["model_type"] if isinstance(value, dict) else "-".join(value or ["default"]))
def test_lora_count_matches_peft(config, targets):
    arch = hf.parse(config)
    wrapped = get_peft_model(_model(config), LoraConfig(
        r=4, lora_alpha=8, target_modules=targets or list(hf.LORA_DEFAULT_TARGETS[config["model_type"]])))
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert hf.parameter_count(hf.lora_shapes(arch, 4, tuple(targets) if targets else None)) == trainable


def test_the_family_counts_its_tokenizer_vocabulary_and_adapter():
    spec = get_family("hf_causal_lm")
    gpt2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 50257}
    byte = spec.parse_params({"config": gpt2})
    adapted = spec.parse_params({"config": gpt2, "lora": {"r": 2}})
    count = lambda config: budget.parameter_count(spec.parameter_shapes(config, 0, 0))  # noqa: E731
    # The configuration's own vocab_size gives way to the tokenizer's: 256 bytes, begin and end.
    wide = spec.parse_params({"config": {**gpt2, "vocab_size": 258}})
    assert count(byte) == count(wide)
    assert count(adapted) - count(byte) == 2 * (2 * 64 + 2 * 3 * 64)  # c_attn: A (r × 64), B (192 × r) per layer
    assert budget.estimate(spec, adapted, 64, 0, 10).flops > budget.estimate(spec, byte, 64, 0, 10).flops
    # A tokenizer trained on the dataset would hold the subjects' text: refused, not queued.
    with pytest.raises(FamilyParamsError):
        spec.parse_params({"config": gpt2, "tokenizer": "bpe"})


@pytest.mark.parametrize("params, message", [
    ({}, "exactly one"),
    ({"config": {"model_type": "gpt2"}, "base": "tiny"}, "exactly one"),
    ({"config": {"model_type": "bert"}}, "model_type must be"),
    ({"config": {"model_type": "gpt2", "auto_map": {"AutoModel": "x.Y"}}}, "remote code"),
    ({"config": {"model_type": "gpt2", "n_embd": 65, "n_head": 2}}, "multiple of n_head"),
    ({"config": {"model_type": "llama", "num_attention_heads": 6, "num_key_value_heads": 4}}, "multiple"),
    ({"config": {"model_type": "qwen2", "num_attention_heads": 4}}, "multiple"),  # 32 key-value heads by default
    ({"config": {"model_type": "gpt2", "n_layer": 2**30}}, "integer from 1"),
    ({"config": {"model_type": "gpt2", "n_positions": 32}, "block_size": 64}, "block_size"),
    ({"config": {"model_type": "qwen2"}, "lora": {"target_modules": ["c_attn"]}}, "target_modules"),
    ({"config": {"model_type": "gpt2"}, "surprise": 1}, ""),
])
def test_invalid_params_are_refused(params, message):
    with pytest.raises(FamilyParamsError) as caught:
        get_family("hf_causal_lm").parse_params(params)
    assert message in str(caught.value)


def test_a_resolved_base_gives_its_architecture():
    base_config = hf.parse(CONFIGS[3]).to_json()
    config = HFCausalLMConfig(base="tiny", base_config=base_config, lora={"r": 4})
    assert config.arch() == hf.parse(CONFIGS[3])
    assert HFCausalLMConfig(base="tiny").arch() is None


@pytest.mark.parametrize("config, targets", [
    (CONFIGS[0], ["c_attn", "c_fc"]), (CONFIGS[4], None), (CONFIGS[6], ["o_proj", "up_proj"]),
], ids=lambda value: value["model_type"] if isinstance(value, dict) else "-".join(value or ["default"]))
def test_lora_training_memory_counts_the_frozen_base_once(config, targets):
    """The training-memory budget of a LoRA model: the frozen base's weights their values alone,
    the adapter its values, gradients and AdamW's two moments, as the worker's network trains
    them (peft's trainable parameters, which are what the optimiser gets)."""
    spec = get_family("hf_causal_lm")
    lora = {"r": 4, **({"target_modules": targets} if targets else {})}
    adapted = spec.parse_params({"config": config, "lora": lora, "batch_size": 3, "block_size": 32})
    family = spec.load_implementation()
    torch.manual_seed(0)
    network = family.build_network(adapted, family.shape(adapted))
    peft_trainable, peft_all = network.model.get_nb_trainable_parameters()
    optimised = sum(p.numel() for p in network.trainable_parameters())
    assert optimised == peft_trainable
    footprint = budget.estimate(spec, adapted, 32, 0, 10)
    assert (footprint.parameters, footprint.trainable) == (peft_all, peft_trainable)
    frozen = peft_all - peft_trainable
    activations = spec.activations(adapted, 32, 0)
    assert footprint.memory_bytes == budget.BYTES_PER_VALUE * (frozen + 4 * peft_trainable + 3 * activations)
    # Without LoRA every weight trains: four copies of each, as for the other families.
    full = spec.parse_params({"config": config, "batch_size": 3, "block_size": 32})
    whole = budget.estimate(spec, full, 32, 0, 10)
    assert whole.trainable == whole.parameters == peft_all - peft_trainable
    assert whole.memory_bytes == budget.BYTES_PER_VALUE * (4 * whole.parameters + 3 * activations)
    assert footprint.memory_bytes < whole.memory_bytes
