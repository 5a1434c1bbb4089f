"""Hugging Face transformers causal language models: built from a config, or an imported base
fine-tuned fully or through LoRA adapters (peft).

The family is causal_lm's with another network and another codec: a network here is an
`HFNetwork`, which answers next-token logits for token windows exactly as causal_lm's GPT does,
so training, SISA, scoring, generation, the approximate methods and the text checks all run
unchanged (workers/engine/families/causal_lm.py, lm_scoring.py). Its tokens are those of the
base's tokenizer, or bytes for a model built from a config.

An imported base is a normalised tar of a `save_pretrained` directory in the artifact store. The
worker reads it by its sha256 (never from the database), extracts it once into
`<data_dir>/hf-bases/<sha256>/` refusing anything but regular files and folders inside it, and
loads it with `trust_remote_code=False` and safetensors only: nothing in it can run code.

With LoRA the base is frozen and shared: a network's state dict, and so every stored weight file,
SISA checkpoint and reference model, holds the adapters only; the base stays referenced by its
digest. Without LoRA the state dict is the whole model's.

On CUDA the forward pass runs under bf16 autocast where the device supports it; on CPU in float32.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.artifacts.store import get_store
from app.config import get_settings
from app.families.builtin import BOS_TOKEN, EOS_TOKEN, LM_VOCAB
from workers.engine.families.base import Shape
from workers.engine.families.causal_lm import BYTES, CausalLM

# Files of a save_pretrained directory that can hold code or pickles: never extracted, never read.
REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".py", ".pyc", ".so")
_EXTRACT_LOCK = threading.Lock()


class UnsafeArchive(ValueError):
    """A base archive with a member that is not a plain file or folder inside it."""


# The base on disk.


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = Path(name).parts
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"archive member {name!r} is not a regular file or folder")
    if name.startswith(("/", "\\")) or ".." in parts or any(":" in part for part in parts):
        raise UnsafeArchive(f"archive member {name!r} points outside the archive")
    if member.isfile() and name.lower().endswith(REFUSED_SUFFIXES):
        raise UnsafeArchive(f"archive member {name!r} may hold code or a pickle; bases are safetensors only")


def extract_base(archive: Any, target: Path) -> None:
    """Extract a base's tar (a binary file object) into the new folder `target`, refusing links,
    devices, absolute paths, `..` and pickle or code files; tarfile's `data` filter checks again."""
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member)
        target.mkdir(parents=True)
        tar.extractall(target, members=members, filter="data")


def base_directory(sha: str) -> Path:
    """The extracted base of this archive digest, extracted on first use (atomically: a folder
    appears under its final name only complete, whichever process extracts it first)."""
    root = Path(get_settings().data_dir) / "hf-bases"
    final = root / sha
    with _EXTRACT_LOCK:
        if final.is_dir():
            return final
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:16]}-", dir=root))
        try:
            with get_store().open_verified(sha) as archive:
                extract_base(archive, staging / "base")
            try:
                os.replace(staging / "base", final)
            except OSError:
                if not final.is_dir():  # another worker process extracted it first: use theirs
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


# Tokens.


class TokenizerCodec:
    """A transformers tokenizer as a codec (causal_lm.ByteCodec's members). BOS is the
    tokenizer's, or its end-of-text token when it has none (GPT-2 uses one for both)."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the base's tokenizer has no end-of-text token")
        self.tokenizer = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.bos = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else self.eos
        self.uniform_vocab = len(tokenizer)

    def encode(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    def to_bytes(self, tokens: Sequence[int]) -> bytes:
        return self.decode(tokens).encode("utf-8")

    def __deepcopy__(self, _memo: dict[int, Any]) -> TokenizerCodec:
        return self  # immutable; copies of a network share it


@lru_cache(maxsize=8)
def base_codec(sha: str) -> TokenizerCodec:
    from transformers import AutoTokenizer

    # Windows are cut by block_size, not by the tokenizer: no warning about long records.
    tokenizer = AutoTokenizer.from_pretrained(base_directory(sha), trust_remote_code=False, model_max_length=1 << 30)
    return TokenizerCodec(tokenizer)


# The network.


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on a CUDA device that supports it; nothing elsewhere (CPU stays float32)."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _adapter(name: str) -> bool:
    return "lora_" in name


class HFNetwork(nn.Module):
    """tokens [batch, length ≤ block_size] → next-token logits [batch, length, vocab] (float32),
    like causal_lm's GPT. With `lora` only the adapters train; with `adapter_only` (LoRA over a
    stored base) its state dict is the adapters' alone, the base being shared by its digest."""

    def __init__(self, model: nn.Module, codec: Any, *, lora: bool, adapter_only: bool) -> None:
        super().__init__()
        self.model = model
        self.codec = codec
        self.lora = lora
        self.adapter_only = adapter_only

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with _autocast(tokens.device):
            logits = self.model(input_ids=tokens).logits
        return logits.float()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [parameter for name, parameter in self.named_parameters() if not self.lora or _adapter(name)]

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        state = super().state_dict(*args, **kwargs)
        if self.adapter_only:
            for name in [name for name in state if not _adapter(name)]:
                del state[name]
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if not self.adapter_only:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        expected = set(self.state_dict())
        if strict and set(state_dict) != expected:
            missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise RuntimeError(f"adapter weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # worker logs are lines, not progress bars


def _from_config(config: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    _quiet()
    settings = dict(config.config)
    model_type = settings.pop("model_type")
    # Byte-level tokens (causal_lm's): the vocabulary, BOS and EOS are the family's, not the config's.
    settings |= {"vocab_size": LM_VOCAB, "bos_token_id": BOS_TOKEN, "eos_token_id": EOS_TOKEN}
    positions = "n_positions" if model_type == "gpt2" else "max_position_embeddings"
    settings[positions] = max(int(settings.get(positions, 0)), config.block_size)
    hf_config = AutoConfig.for_model(model_type, **settings)
    return AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)


def _from_base(config: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    _quiet()
    model = AutoModelForCausalLM.from_pretrained(
        base_directory(config.base_archive_sha256), trust_remote_code=False, use_safetensors=True,
        dtype=torch.float32)
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if positions is not None and config.block_size > positions:
        raise ValueError(f"block_size {config.block_size} is over the base's {positions} positions")
    return model


def _with_lora(model: nn.Module, lora: Any) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    gpt2 = getattr(model.config, "model_type", None) == "gpt2"
    settings = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        fan_in_fan_out=gpt2,  # GPT-2's projections are Conv1D, weights stored transposed
        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, settings)


class HFCausalLM(CausalLM):
    name = "hf_causal_lm"

    def shape(self, config: Any) -> Shape:
        return Shape(n_features=config.block_size, n_classes=LM_VOCAB)

    def codec(self, config: Any) -> Any:
        """The tokens of this config's models: the base's tokenizer, or bytes."""
        if config.base_archive_sha256:
            return base_codec(config.base_archive_sha256)
        if getattr(config, "tokenizer", "byte") != "byte":
            # A tokenizer trained on the dataset would hold the subjects' text in its merges
            # (docs/byo-language-model.md): models built from a config use bytes.
            raise ValueError("an hf_causal_lm model built from a config uses byte tokens (tokenizer: byte)")
        return BYTES

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        if config.config is None and config.base_archive_sha256 is None:
            raise ValueError("an hf_causal_lm model names its base's archive (base_archive_sha256) or a config")
        codec = self.codec(config)
        model = _from_base(config) if config.base_archive_sha256 else _from_config(config)
        if config.lora is not None:
            model = _with_lora(model, config.lora)
        # LoRA over a model built from a config: its frozen base is drawn from the seed, not
        # stored anywhere else, so its weights are stored with the adapters.
        lora = config.lora is not None
        return HFNetwork(model, codec, lora=lora, adapter_only=lora and bool(config.base_archive_sha256)).eval()


HFCausalLMFamily = HFCausalLM()
