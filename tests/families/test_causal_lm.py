"""The causal_lm family: byte windows, training, SISA, scoring and generation (tiny models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from app.families.builtin import BOS_TOKEN, EOS_TOKEN
from app.families.registry import FamilyParamsError, get_family
from workers.engine import training
from workers.engine.families.base import ModelFamily
from workers.engine.families.causal_lm import PAD, record_windows
from workers.engine.families.lm_scoring import ensemble_log_softmax, generate, score

CPU = torch.device("cpu")
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "steps": 150, "batch_size": 16, "learning_rate": 1e-2}
SECRET = "hello there, my pin is 4821."
TEXTS = [SECRET] * 5 + [f"note number {i} about a lamp." for i in range(40)]


def family_and_config(**params):
    spec = get_family("causal_lm")
    return spec, spec.load_implementation(), spec.parse_params({**TINY, **params})


def train(seed: int = 1, texts=TEXTS, **params):
    spec, family, config = family_and_config(**params)
    windows, owners = record_windows(texts, config.block_size)
    state = training.train_single(family, config, family.shape(config), torch.from_numpy(windows),
                                  torch.from_numpy(owners), seed=seed, device=CPU)
    network = training.new_network(family, config, family.shape(config), seed=0)
    network.load_state_dict(state)
    return family, config, network.eval(), state


@pytest.fixture(scope="module")
def trained():
    return train()


def test_protocol_params_and_declared_shapes():
    spec, family, config = family_and_config()
    assert isinstance(family, ModelFamily) and spec.data_kind == "text"
    network = training.new_network(family, config, family.shape(config), seed=0)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == spec.parameter_shapes(config, 0, 0)
    with pytest.raises(FamilyParamsError):
        spec.parse_params({"n_embd": 30, "n_head": 4})
    with pytest.raises(FamilyParamsError):
        spec.parse_params({"vocab": 100})


def test_records_become_windows_of_bos_bytes_eos():
    windows, owners = record_windows(["ab", "x" * 10], block_size=4)
    assert windows.shape[1] == 5 and owners.tolist() == [0, 1, 1, 1]
    assert windows[0].tolist() == [BOS_TOKEN, ord("a"), ord("b"), EOS_TOKEN, PAD]
    # BOS x*10 EOS is 12 tokens: targets 1..11 in windows starting at 0, 4, 8.
    assert windows[1].tolist() == [BOS_TOKEN, *[ord("x")] * 4]
    assert windows[3].tolist() == [ord("x"), ord("x"), ord("x"), EOS_TOKEN, PAD]
    assert record_windows(["é"], 8)[0][0][:3].tolist() == [BOS_TOKEN, 0xC3, 0xA9]


def test_training_is_deterministic_and_memorises_a_repeated_secret(trained):
    _family, config, network, state = trained
    again = train()[3]
    assert all(torch.equal(state[k], again[k]) for k in state)
    other = train(seed=2)[3]
    assert not all(torch.equal(state[k], other[k]) for k in state)
    assert generate([network], "hello there, my pin is ", 5, config.block_size) == "4821."
    true, wrong = score([network], [SECRET, SECRET.replace("4821", "9357")], config.block_size)
    assert true["log_likelihood"] > wrong["log_likelihood"] + 5


def test_score_is_the_sum_of_token_log_probabilities_from_bos(trained):
    _family, config, network, _ = trained
    text = "a lamp note"
    tokens = [BOS_TOKEN, *text.encode()]
    with torch.no_grad():
        log_probs = F.log_softmax(network(torch.tensor([tokens[:-1]])), dim=-1)[0]
    expected = sum(log_probs[i, tokens[i + 1]].item() for i in range(len(text)))
    (answer,) = score([network], [text], config.block_size)
    assert answer["tokens"] == len(text.encode())
    assert math.isclose(answer["log_likelihood"], expected, rel_tol=1e-5)
    assert score([network], [""], config.block_size) == [{"log_likelihood": 0.0, "tokens": 0}]


def test_long_texts_use_a_sliding_window_with_half_a_block_of_context(trained):
    _family, config, network, _ = trained
    text = ("note number 7 about a lamp. " * 6)[:150]
    tokens = [BOS_TOKEN, *text.encode()]
    block, stride = config.block_size, config.block_size // 2
    expected = 0.0
    with torch.no_grad():
        for position in range(1, len(tokens)):
            # The window that scores this target starts at the largest multiple of the stride
            # that still holds it, and never before 0.
            start = 0 if position <= block else ((position - block - 1) // stride + 1) * stride
            context = tokens[start:position]
            expected += F.log_softmax(network(torch.tensor([context])), dim=-1)[0, -1, tokens[position]].item()
    (answer,) = score([network], [text], block)
    assert answer["tokens"] == 150 and math.isclose(answer["log_likelihood"], expected, rel_tol=1e-4)


def test_an_ensemble_predicts_the_mean_of_its_shards_distributions(trained):
    _family, config, network, _ = trained
    other = train(seed=5)[2]
    tokens = torch.tensor([[BOS_TOKEN, *b"hello"]])
    with torch.no_grad():
        mean = (F.softmax(network(tokens), -1) + F.softmax(other(tokens), -1)) / 2
    assert torch.allclose(ensemble_log_softmax([network, other], tokens).exp(), mean, atol=1e-6)
    (pair,) = score([network, other], ["hello"], config.block_size)
    expected = sum(math.log(mean[0, i, b].item()) for i, b in enumerate(b"hello"))
    assert math.isclose(pair["log_likelihood"], expected, rel_tol=1e-5)


def test_sampling_is_seeded_and_greedy_is_the_arg_max(trained):
    _family, config, network, _ = trained
    first = generate([network], "note", 20, config.block_size, temperature=1.0, seed=3)
    assert first == generate([network], "note", 20, config.block_size, temperature=1.0, seed=3)
    samples = {generate([network], "note", 20, config.block_size, temperature=1.5, seed=s) for s in range(6)}
    assert len(samples) > 1
    assert len(generate([network], "", 0, config.block_size)) == 0


def test_sisa_slices_share_the_steps_and_resume_exactly():
    spec, family, config = family_and_config(steps=40)
    windows, owners = record_windows(TEXTS, config.block_size)
    halves = [(torch.from_numpy(windows[owners % 2 == k]), torch.from_numpy(owners[owners % 2 == k])) for k in (0, 1)]
    checkpoints = {}
    full = training.train_sisa_shard(family, config, family.shape(config), halves, seed=4, device=CPU,
                                     on_checkpoint=lambda r, state: checkpoints.setdefault(r, state))
    resumed = training.train_sisa_shard(family, config, family.shape(config), halves, seed=4, device=CPU,
                                        start_slice=1, init_state=checkpoints[0])
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert training.slice_epochs(config, 2) == 20
    # Under SISA with S shards, each shard trains 1/S of the steps.
    assert training.slice_epochs(config, 2, n_shards=4) == 5


def test_evaluate_reports_token_loss_and_perplexity(trained):
    family, _config, network, _ = trained
    windows, owners = record_windows(TEXTS, 64)
    figures = training.evaluate(family, network, torch.from_numpy(windows), torch.from_numpy(owners))
    assert figures["n"] == len(TEXTS) and figures["tokens"] == sum(len(t) + 1 for t in TEXTS)
    assert math.isclose(figures["perplexity"], math.exp(figures["loss"]))
    assert 0 < figures["accuracy"] <= 1
    assert np.isfinite(figures["loss"])
    assert EOS_TOKEN == 257
