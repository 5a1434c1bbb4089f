"""Scoring and generating with a causal_lm, one network or a SISA ensemble.

An ensemble's next-token distribution is the mean of its shards' distributions, so its
log-probability of a token is logsumexp over the shards' log-probabilities minus log(S).

`score` is the sum of the natural-log probabilities of every token of a text given its prefix,
the first token conditioned on BOS alone. Tokens are the networks' codec's (`codec_of`): bytes
for causal_lm, the model's tokenizer for hf_causal_lm. A text longer than block_size is scored with a
sliding window: windows of block_size inputs advance by half a block, and each scores only the
targets the previous one did not, so every target after the first window sees at least half a
block of context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workers.engine.families.causal_lm import PAD, codec_of, ensemble_log_softmax, ensemble_window_log_probs

SCORE_BATCH = 256


def _score_rows(tokens: list[int], block_size: int) -> list[tuple[list[int], int]]:
    """(window tokens, index of the first target it scores) of one text's tokens (BOS first)."""
    if len(tokens) <= block_size + 1:
        return [(tokens, 0)]
    stride = max(1, block_size // 2)
    rows, scored = [], 0  # targets scored so far: positions 1..scored
    start = 0
    while scored < len(tokens) - 1:
        window = tokens[start:start + block_size + 1]
        rows.append((window, scored - start))
        scored = start + len(window) - 1
        start += stride
    return rows


def score(networks: Sequence[nn.Module], texts: Sequence[str], block_size: int) -> list[dict]:
    """[{"log_likelihood", "tokens"}] per text."""
    codec = codec_of(networks)
    encoded = [codec.encode(text) for text in texts]
    rows: list[tuple[int, list[int], int]] = []
    for index, tokens in enumerate(encoded):
        rows += [(index, window, skip) for window, skip in _score_rows([codec.bos, *tokens], block_size)]
    totals = [0.0] * len(texts)
    rows.sort(key=lambda row: len(row[1]))  # batches of similar length pad little
    for start in range(0, len(rows), SCORE_BATCH):
        batch = rows[start:start + SCORE_BATCH]
        width = max(len(window) for _, window, _ in batch)
        windows = torch.full((len(batch), max(width, 2)), PAD, dtype=torch.long)
        for i, (_, window, _) in enumerate(batch):
            windows[i, :len(window)] = torch.tensor(window)
        log_probs, _, mask = ensemble_window_log_probs(networks, windows)
        for i, (index, _, skip) in enumerate(batch):
            mask[i, :skip] = False
            totals[index] += float(log_probs[i][mask[i]].double().sum())
    return [{"log_likelihood": totals[i], "tokens": len(tokens)} for i, tokens in enumerate(encoded)]


def generate_tokens(networks: Sequence[nn.Module], prompt: str, max_new_tokens: int, block_size: int,
                    temperature: float = 0.0, seed: int = 0) -> list[int]:
    """New tokens after BOS + prompt, up to EOS (not included); greedy at temperature 0."""
    return generate_batch(networks, [prompt], max_new_tokens, block_size, temperature, seed)[0]


def generate_batch(networks: Sequence[nn.Module], prompts: Sequence[str | bytes], max_new_tokens: int, block_size: int,
                   temperature: float = 0.0, seed: int = 0) -> list[list[int]]:
    """Generation for several prompts at once (left-aligned, each at its own length)."""
    generator = torch.Generator().manual_seed(seed)
    codec = codec_of(networks)
    sequences = [[codec.bos, *codec.encode(p)] for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        if not live:
            break
        contexts = [sequences[i][-block_size:] for i in live]
        width = max(len(c) for c in contexts)
        inputs = torch.zeros((len(live), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            inputs[row, :len(context)] = torch.tensor(context)
        log_probs = ensemble_log_softmax(networks, inputs)
        last = torch.stack([log_probs[row, len(c) - 1] for row, c in enumerate(contexts)])
        if temperature <= 0:
            chosen = last.argmax(dim=1).tolist()
        else:
            chosen = torch.multinomial(torch.softmax(last / temperature, dim=1), 1, generator=generator).squeeze(1).tolist()
        still = []
        for i, token in zip(live, chosen, strict=True):
            if token in (codec.eos, codec.bos):
                continue
            sequences[i].append(token)
            out[i].append(token)
            still.append(i)
        live = still
    return out


def generate(networks: Sequence[nn.Module], prompt: str, max_new_tokens: int, block_size: int,
             temperature: float = 0.0, seed: int = 0) -> str:
    return codec_of(networks).decode(generate_tokens(networks, prompt, max_new_tokens, block_size, temperature, seed))
