"""Hugging Face bases for tests: a tiny GPT-2 (2 layers, 64 dims) built with transformers and a
byte-level BPE tokenizer trained with `tokenizers`, saved with `save_pretrained` (nothing is
downloaded), packed as the import takes it, and imported."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128}
TOKENIZER_TEXTS = [f"note {i}: the lamp in room {i % 7} was fixed on day {i % 28}." for i in range(200)]


def save_tiny_gpt2(folder: Path, *, vocab_size: int = 300, seed: int = 0, **config) -> Path:
    """save_pretrained of a tiny GPT-2 and its tokenizer into `folder`."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(TOKENIZER_TEXTS, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>")
    settings = {**TINY_GPT2, **config}
    settings.pop("model_type")
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), bos_token_id=0, eos_token_id=0, **settings))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def pack(folder: Path, *, kind: str = "tar", prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    """The folder's files as a tar ("tar", "tgz") or "zip", under `prefix` (a folder name and
    slash, or nothing), with `extra` members (name → bytes) added as they are named."""
    members = {f"{prefix}{path.name}": path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    members |= extra or {}
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tgz" else "w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def post_base(client, headers, archive: bytes, name: str = "tiny-gpt2", **extra_parts):
    files = {"archive": ("base.tar", archive, "application/octet-stream"), **extra_parts}
    return client.post("/v1/models/import", data={"metadata": json.dumps({"kind": "base", "name": name})},
                       files=files, headers=headers)


def import_base(client, headers, folder: Path, name: str = "tiny-gpt2") -> dict:
    response = post_base(client, headers, pack(folder), name=name)
    assert response.status_code == 201, response.text
    return response.json()
