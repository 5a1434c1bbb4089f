"""Hugging Face language models built on the spot, never downloaded: a byte-level BPE tokenizer
trained with `tokenizers`, a GPT-2 of a given size, `save_pretrained`, and the normalised tar the
service stores for an imported base (the folder's files at the top level, sorted, with fixed
owners and times). Used by the tests and by bench/hf_language.py."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

END = "<|endoftext|>"


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
              n_positions: int = 64, vocab_size: int = 384, seed: int = 0):
    """A freshly initialised GPT-2 and its tokenizer, saved as safetensors in `directory`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = bpe_tokenizer(texts, vocab_size)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def archive(directory: Path) -> bytes:
    """The normalised uncompressed tar of a save_pretrained folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = path.stat().st_size, 0, 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()
