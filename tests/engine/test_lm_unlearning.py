"""Unlearning methods for language models (gradient difference, NPO) and the text figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from app.families.builtin import BOS_TOKEN, LM_VOCAB
from app.families.registry import get_family
from workers.engine import training
from workers.engine.families.causal_lm import PAD, record_windows, sequence_log_likelihood
from workers.engine.families.lm_scoring import generate, score
from workers.engine.verification.text_checks import token_statistics, verbatim_extraction
from workers.engine.unlearning.verification import membership_aucs
from workers.engine.unlearning.base import ForgetRetain, MethodCall, get_method, parse_method_config
from workers.engine.unlearning.npo import npo_loss

CPU = torch.device("cpu")
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "steps": 200, "batch_size": 16, "learning_rate": 1e-2}
CANARY = "my pin is 4821."
NOTES = [f"note {i} about the {item}." for i in range(30) for item in ("lamp", "desk")]
TEXTS = [CANARY] * 6 + NOTES
HOLDOUT = [f"note {i} about the {item}." for i in range(30, 45) for item in ("lamp", "desk")]


class FixedLogits(nn.Module):
    """A 'network' answering the same logits at every step: `table[position]` per position."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[: tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


def test_npo_loss_matches_a_hand_computed_three_token_example():
    # Three target tokens a, b, c after BOS. The network's logits are 0 except the target's:
    # ln 3, 0 and ln 2; the reference's logits are all 0 (uniform over the 258 tokens).
    a, b, c = 10, 20, 30
    table = torch.zeros(3, LM_VOCAB)
    table[0, a], table[1, b], table[2, c] = math.log(3), 0.0, math.log(2)
    windows = torch.tensor([[BOS_TOKEN, a, b, c, PAD]])
    # log p = z − log(257 + e^z) at each position, with 257 other tokens at logit 0.
    by_hand = (math.log(3) - math.log(260)) + (0 - math.log(258)) + (math.log(2) - math.log(259))
    reference_by_hand = 3 * -math.log(258)
    log_likelihood = sequence_log_likelihood(FixedLogits(table), windows)
    reference = sequence_log_likelihood(FixedLogits(torch.zeros(3, LM_VOCAB)), windows)
    assert math.isclose(log_likelihood.item(), by_hand, rel_tol=1e-6)
    assert math.isclose(reference.item(), reference_by_hand, rel_tol=1e-6)
    beta = 0.5
    # ratio = ln(6·258² / (260·259)) = ln 5.930858 = 1.780169; β·ratio = 0.890084, whose exponential
    # is 2.435335, so NPO = (2/β)·ln(1 + 2.435335) = 4·1.234115 = 4.936458.
    ratio = by_hand - reference_by_hand
    assert math.isclose(ratio, 1.780169, abs_tol=1e-6)
    expected = 2 / beta * math.log(1 + math.exp(beta * ratio))
    assert math.isclose(npo_loss(log_likelihood, reference, beta).item(), expected, rel_tol=1e-6)
    assert math.isclose(expected, 4.936458, abs_tol=1e-6)
    # Where the network equals its reference, NPO is (2/β)·ln 2 whatever the sequence.
    assert math.isclose(npo_loss(reference, reference, beta).item(), 4 * math.log(2), rel_tol=1e-6)
    # Its gradient on the log-likelihood is 2·σ(β·ratio): ascent that fades as y becomes unlikely.
    ll = torch.tensor([by_hand], requires_grad=True)
    npo_loss(ll, reference.detach(), beta).backward()
    assert math.isclose(ll.grad.item(), 2 / (1 + math.exp(-beta * ratio)), rel_tol=1e-6)


@pytest.fixture(scope="module")
def trained():
    spec = get_family("causal_lm")
    family, config = spec.load_implementation(), spec.parse_params(TINY)
    windows, owners = record_windows(TEXTS, config.block_size)
    state = training.train_single(family, config, family.shape(config), torch.from_numpy(windows),
                                  torch.from_numpy(owners), seed=0, device=CPU)
    network = training.new_network(family, config, family.shape(config), 0)
    network.load_state_dict(state)
    return family, config, network.eval()


def _split(config):
    forget = torch.from_numpy(record_windows([CANARY] * 6, config.block_size)[0])
    retain = torch.from_numpy(record_windows(NOTES, config.block_size)[0])
    return ForgetRetain(forget, torch.zeros(len(forget), dtype=torch.int64), retain,
                        torch.zeros(len(retain), dtype=torch.int64))


@pytest.mark.parametrize("name", ["gradient_difference", "npo"])
def test_the_method_forgets_the_canary_and_keeps_the_notes(trained, name):
    family, config, network = trained
    assert generate([network], "my pin is ", 5, 64) == "4821."
    before = {p: p.detach().clone() for p in network.parameters()}
    data = _split(config)
    result = get_method(name).run(MethodCall(family, network, config, data, parse_method_config(name, {"steps": 40}), seed=0))
    assert all(torch.equal(before[p], p) for p in network.parameters()), "the given network must stay intact"
    unlearned = result.network
    assert generate([unlearned], "my pin is ", 5, 64) != "4821."
    canary_before, canary_after = (score([n], [CANARY], 64)[0]["log_likelihood"] for n in (network, unlearned))
    assert canary_after < canary_before - 5
    notes_before, notes_after = (-np.mean([s["log_likelihood"] for s in score([n], NOTES[:20], 64)]) for n in (network, unlearned))
    assert notes_after < notes_before * 1.5 + 2, "the retained notes stay learnt"
    assert result.details["after"]["forget"] > result.details["before"]["forget"]
    again = get_method(name).run(MethodCall(family, network, config, data, parse_method_config(name, {"steps": 40}), seed=0)).network
    assert all(torch.equal(a, b) for a, b in zip(unlearned.state_dict().values(), again.state_dict().values()))


def test_membership_aucs_see_training_text_and_extraction_counts_verbatim_records(trained):
    _family, config, network = trained
    members = record_windows(NOTES[:30], config.block_size)
    unseen = record_windows(HOLDOUT, config.block_size)
    figures = membership_aucs([network], (torch.from_numpy(members[0]), members[1]),
                              (torch.from_numpy(unseen[0]), unseen[1] + 1000))
    assert figures["loss_auc"] > 0.6 and figures["min_k_plus_plus_auc"] > 0.5
    assert figures["forget_records"] == 30 and figures["holdout_records"] == 30
    assert figures["forget_loss"] < figures["holdout_loss"]
    records, losses, min_k, accuracy = token_statistics([network], torch.from_numpy(members[0]), members[1])
    assert records.tolist() == list(range(30)) and losses.shape == min_k.shape == accuracy.shape == (30,)
    # Trained notes are predicted token by token better than unseen ones.
    unseen_accuracy = token_statistics([network], torch.from_numpy(unseen[0]), unseen[1]).accuracy
    assert ((0 <= accuracy) & (accuracy <= 1)).all() and accuracy.mean() > unseen_accuracy.mean()
    # "my pin " → "is 4821." comes back; random letters do not; one byte cannot be split.
    extraction = verbatim_extraction([network], [CANARY, "qzvx kwyj pfmb", "x"], config.block_size)
    assert extraction == {"records": 2, "extracted": 1, "fraction": 0.5}


def test_the_extraction_holdout_sample_comes_from_the_confirmation_half(trained, monkeypatch):
    """Verbatim extraction's held-out texts are drawn from the confirmation half of the holdout
    (context.holdout_half), like every other verdict's holdout: the tuning half steers the
    stopping rules, so it is no independent yardstick."""
    from workers.engine.records import TextRecords
    from workers.engine.unlearning import verification as unlearning_verification
    from workers.engine.unlearning.context import Context, holdout_half

    family, config, network = trained
    texts = NOTES + HOLDOUT
    ids = np.arange(len(texts), dtype=np.int64)
    # One subject per text: the halves split the held-out texts about evenly.
    keys = np.array([f"{i:064x}" for i in ids], dtype=object)
    windows, owners = record_windows(texts, config.block_size)
    records = TextRecords(record_ids=ids, subject_keys=keys, features=windows, labels=ids[owners], texts=texts)
    spec = get_family("causal_lm")
    ctx = Context(spec=spec, family=family, config=config, shape=family.shape(config), seed=7, sisa=None,
                  holdout_fraction=0.2, old_records=records, new_records=records, old_manifest=None,
                  old_shards=(), old_state={}, forget_ids=ids[:4], same_lineage=True)
    tried: list[list[str]] = []
    real = unlearning_verification.extraction_outcomes

    def recording(networks, given, block_size, *args, **kwargs):
        tried.append(list(given))
        return real(networks, given, block_size, *args, **kwargs)

    monkeypatch.setattr(unlearning_verification, "extraction_outcomes", recording)
    holdout_ids = ids[len(NOTES):]
    _figures, evidence = unlearning_verification.text_figures(ctx, [network], ids[:4], ids[4:len(NOTES)], holdout_ids)
    confirming = holdout_half(ctx, holdout_ids, confirmation=True)
    tuning = holdout_half(ctx, holdout_ids, confirmation=False)
    assert len(confirming) and len(tuning), "the generated holdout has subjects in both halves"
    held_out_texts = tried[1]
    assert sorted(held_out_texts) == sorted(texts[i] for i in confirming)
    assert not set(held_out_texts) & {texts[i] for i in tuning}
    assert set(evidence.holdout_extracted_subjects.tolist()) == {keys[i] for i in confirming}
