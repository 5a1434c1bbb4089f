"""A decoder-only transformer over bytes (after Karpathy's nanoGPT `model.py`), for text datasets.

Tokens are the 256 byte values plus begin-of-text (BOS) and end-of-text (EOS): nothing to
download, every UTF-8 text encodes. A record trains as BOS + its bytes + EOS, cut into windows
of block_size + 1 tokens (the inputs and, shifted by one, the targets); a record shorter than
that is one window, padded. The "features" a family receives elsewhere are these windows
[n, block_size + 1] (PAD = -1) and the "labels" the record id owning each window, so SISA and
the job code split, concatenate and select them like tabular rows.

Everything is deterministic under a seed on CPU: the window order comes from a seeded
generator and dropout from a forked, seeded global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app.families.builtin import BOS_TOKEN, EOS_TOKEN, LM_VOCAB
from workers.engine.families.base import Shape
from workers.engine.training import derive_seed, network_device, rng_devices, trainable_parameters

PAD = -1
IGNORE = -100


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(batch, length, width)))


class MLP(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(config.n_embd), CausalSelfAttention(config)
        self.ln_2, self.mlp = nn.LayerNorm(config.n_embd), MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """tokens [batch, length ≤ block_size] → next-token logits [batch, length, vocab]. The head
    is not tied to the embedding: safetensors stores no shared tensors."""

    def __init__(self, config: Any):
        super().__init__()
        self.block_size = config.block_size
        self.wte = nn.Embedding(LM_VOCAB, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, LM_VOCAB, bias=False)
        for name, parameter in self.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                # GPT-2's initialisation, the residual projections scaled down by depth.
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(parameter, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# Tokens and windows.


def encode(text: str | bytes) -> list[int]:
    return list(text.encode("utf-8") if isinstance(text, str) else text)


def decode(tokens: Sequence[int]) -> str:
    # A byte-level model may stop inside a multi-byte character: replace, never fail.
    return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


class ByteCodec:
    """Text to tokens and back: the byte-level codec of this family. A family with another
    tokenizer (hf_causal_lm) gives its networks a `codec` attribute with the same members, and
    scoring, generation and the text checks use it (`codec_of`)."""

    bos, eos = BOS_TOKEN, EOS_TOKEN
    # Tokens a uniform guess spreads over (gradient difference's cap on the forget loss).
    uniform_vocab = 256

    def encode(self, text: str | bytes) -> list[int]:
        return encode(text)

    def decode(self, tokens: Sequence[int]) -> str:
        return decode(tokens)

    def to_bytes(self, tokens: Sequence[int]) -> bytes:
        return bytes(t for t in tokens if t < 256)


BYTES = ByteCodec()


def codec_of(networks: Sequence[nn.Module]) -> Any:
    """The codec of a network or ensemble (all shards share one): its own, else bytes."""
    return getattr(networks[0], "codec", BYTES) if networks else BYTES


def token_windows(token_lists: Sequence[Sequence[int]], block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of every record (its tokens, BOS and EOS included) and the index of each
    one's record."""
    width = block_size + 1
    rows: list[np.ndarray] = []
    owners: list[int] = []
    for index, token_list in enumerate(token_lists):
        tokens = np.asarray(token_list, dtype=np.int64)
        for start in range(0, max(1, len(tokens) - 1), block_size):
            window = np.full(width, PAD, dtype=np.int64)
            piece = tokens[start:start + width]
            window[:len(piece)] = piece
            rows.append(window)
            owners.append(index)
    windows = np.stack(rows) if rows else np.zeros((0, width), dtype=np.int64)
    return windows, np.asarray(owners, dtype=np.int64)


def record_windows(texts: Sequence[str | bytes], block_size: int, codec: Any = BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of every record (BOS + its tokens + EOS) and the index of each one's record."""
    return token_windows([[codec.bos, *codec.encode(text), codec.eos] for text in texts], block_size)


def inputs_and_targets(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (PAD as token 0; those positions predict nothing) and targets (PAD ignored),
    trimmed to the longest window of the batch."""
    length = int((windows != PAD).sum(dim=1).max().item()) if windows.shape[0] else 1
    windows = windows[:, :max(length, 2)]
    inputs = windows[:, :-1].clamp_min(0)
    targets = windows[:, 1:].masked_fill(windows[:, 1:] == PAD, IGNORE)
    return inputs, targets


def window_token_losses(network: nn.Module, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood [n, length] and the mask of real targets."""
    inputs, targets = inputs_and_targets(windows.to(network_device(network)))
    logits = network(inputs)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return losses, targets != IGNORE


def sequence_log_likelihood(network: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of each window's targets [n], differentiable (the NPO and
    gradient-difference objectives use it)."""
    losses, mask = window_token_losses(network, windows)
    return -(losses * mask).sum(dim=1)


def ensemble_log_softmax(networks: Sequence[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """Log of the mean next-token distribution of the networks [batch, length, vocab]."""
    with torch.no_grad():
        parts = [F.log_softmax(network.eval()(inputs.to(network_device(network))).float(), dim=-1).to(inputs.device)
                 for network in networks]
    if len(parts) == 1:
        return parts[0]
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(len(parts))


def ensemble_window_log_probs(networks: Sequence[nn.Module], windows: torch.Tensor):
    """(log-probability of each target, whether it was the arg-max, mask of real targets)."""
    inputs, targets = inputs_and_targets(windows)
    log_probs = ensemble_log_softmax(networks, inputs)
    mask = targets >= 0
    safe = targets.clamp_min(0)
    picked = log_probs.gather(2, safe.unsqueeze(2)).squeeze(2)
    return picked, log_probs.argmax(dim=2) == safe, mask


class CausalLM:
    name = "causal_lm"

    def shape(self, config: Any) -> Shape:
        return Shape(n_features=config.block_size, n_classes=LM_VOCAB)

    def build_network(self, config: Any, shape: Shape) -> nn.Module:
        return GPT(config)

    def train(self, network: nn.Module, config: Any, features: torch.Tensor, labels: torch.Tensor, *,
              seed: int, epochs: int | None = None) -> None:
        """`features` are windows, `labels` their records; `epochs` overrides config.steps (SISA
        gives each slice a share of the steps)."""
        steps = config.steps if epochs is None else epochs
        n = features.shape[0]
        if n == 0 or steps == 0:
            return
        device = network_device(network)
        optimizer = torch.optim.AdamW(trainable_parameters(network), lr=config.learning_rate, betas=(0.9, 0.99), weight_decay=0.0)
        order_generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=order_generator)
        position = 0
        with torch.random.fork_rng(devices=rng_devices(device)):
            torch.manual_seed(derive_seed(seed, "dropout"))
            network.train()
            for _ in range(steps):
                if position >= n:
                    order, position = torch.randperm(n, generator=order_generator), 0
                batch = order[position:position + config.batch_size]
                position += config.batch_size
                losses, mask = window_token_losses(network, features[batch])
                loss = (losses * mask).sum() / mask.sum().clamp_min(1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable_parameters(network), 1.0)
                optimizer.step()
        network.eval()

    def predict_proba(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        raise ValueError("a causal_lm answers generate and score, not class probabilities")

    def loss_per_example(self, network: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean token NLL of each window."""
        was_training = network.training
        with torch.no_grad():
            losses, mask = window_token_losses(network.eval(), features)
        network.train(was_training)
        return (losses * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)

    def evaluate(self, networks: Sequence[nn.Module], features: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Mean token NLL (nats), perplexity and next-token accuracy of the ensemble over the
        windows of some records; `n` counts the records."""
        records = int(np.unique(labels.numpy()).size) if labels.numel() else 0
        if records == 0:
            return {"accuracy": None, "loss": None, "perplexity": None, "tokens": 0, "n": 0}
        total = correct = tokens = 0.0
        for start in range(0, features.shape[0], 256):
            log_probs, hits, mask = ensemble_window_log_probs(networks, features[start:start + 256])
            total -= float((log_probs * mask).sum())
            correct += float((hits & mask).sum())
            tokens += float(mask.sum())
        loss = total / tokens
        return {"accuracy": correct / tokens, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "tokens": int(tokens), "n": records}


CausalLMFamily = CausalLM()
