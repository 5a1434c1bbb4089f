"""Hugging Face language models built on the spot, never downloaded: a byte-level BPE tokenizer
trained with `tokenizers`, a GPT-2 of a given size saved with `save_pretrained`, the archives the
import takes (tar, tgz or zip, `pack`) and the normalised tar the service stores for an imported
base (`archive`), and the import itself. Used by the tests, bench/hf_language.py and
bench/hf_import.py."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

END = "<|endoftext|>"
# The tests' tiny GPT-2 (2 layers, 64 dims) and the notes its tokenizer learns from.
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128}
TOKENIZER_TEXTS = [f"note {i}: the lamp in room {i % 7} was fixed on day {i % 28}." for i in range(200)]


def bpe_tokenizer(texts: Sequence[str], vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on `texts`, with GPT-2's single end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=END, eos_token=END, unk_token=END)


def save_gpt2(directory: Path, texts: Sequence[str], *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
              n_positions: int = 64, vocab_size: int = 384, seed: int = 0, **config):
    """A freshly initialised GPT-2 (other GPT2Config settings in `config`) and its tokenizer
    trained on `texts`, saved as safetensors in `directory`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = bpe_tokenizer(texts, vocab_size)
    settings = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **config}
    settings = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                          n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                          **settings)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(settings)
    Path(directory).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def save_tiny_gpt2(folder: Path, *, vocab_size: int = 300, seed: int = 0, **config) -> Path:
    """`save_gpt2` of the tests' tiny GPT-2 (TINY_GPT2, settings in `config` override it) with a
    tokenizer trained on TOKENIZER_TEXTS, into `folder`."""
    settings = {**TINY_GPT2, **config}
    settings.pop("model_type")
    save_gpt2(folder, TOKENIZER_TEXTS, vocab_size=vocab_size, seed=seed, **settings)
    return folder


def archive(directory: Path) -> bytes:
    """The normalised uncompressed tar of a save_pretrained folder (as the service stores a base)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = path.stat().st_size, 0, 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def pack(folder: Path, *, kind: str = "tar", prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    """The folder's files as a tar ("tar", "tgz") or "zip", under `prefix` (a folder name and
    slash, or nothing), with `extra` members (name → bytes) added as they are named."""
    members = {f"{prefix}{path.name}": path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    members |= extra or {}
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as packed:
            for name, data in members.items():
                packed.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tgz" else "w") as packed:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                packed.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def post_base(client, headers, archive: bytes, name: str = "tiny-gpt2", **extra_parts):
    files = {"archive": ("base.tar", archive, "application/octet-stream"), **extra_parts}
    return client.post("/v1/models/import", data={"metadata": json.dumps({"kind": "base", "name": name})},
                       files=files, headers=headers)


def import_base(client, headers, folder: Path, name: str = "tiny-gpt2") -> dict:
    response = post_base(client, headers, pack(folder), name=name)
    assert response.status_code == 201, response.text
    return response.json()
