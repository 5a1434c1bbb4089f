"""The hf_causal_lm family: an imported base read safely from its archive, LoRA adapters that
alone are stored, SISA slices over them, the base's tokens in scoring and generation, the
approximate methods through the adapters, and models built from a config (tiny GPT-2s)."""

from __future__ import annotations

import io
import math
import tarfile

import numpy as np
import pytest
import torch

from app.artifacts.store import get_store
from app.families.registry import FamilyParamsError, get_family
from tests.hf_models import archive, save_gpt2
from workers import inference
from workers.engine import training
from workers.engine.families.causal_lm import record_windows
from workers.engine.families.hf_causal_lm import UnsafeArchive, base_directory, extract_base
from workers.engine.families.lm_scoring import generate, score
from workers.engine.serialization import load_network, state_to_bytes
from workers.engine.unlearning.base import ForgetRetain, MethodCall, get_method, parse_method_config

CPU = torch.device("cpu")
CANARY = "the door code of Alma is 4821."
NOTES = [f"note {i}: the {item} in room {i % 7} is broken." for i in range(24) for item in ("lamp", "desk")]
TUNE = {"lora": {"r": 4, "alpha": 8}, "block_size": 32, "steps": 40, "batch_size": 8, "learning_rate": 1e-2}


@pytest.fixture(scope="module")
def base(tmp_path_factory, database_url):
    """(archive digest, tokenizer) of a tiny GPT-2 saved with save_pretrained and stored as a base."""
    directory = tmp_path_factory.mktemp("base")
    _model, tokenizer = save_gpt2(directory, NOTES + [CANARY])
    return get_store().put_bytes(archive(directory)), tokenizer


def family_config(sha: str, **params):
    spec = get_family("hf_causal_lm")
    return spec, spec.load_implementation(), spec.parse_params({**TUNE, "base": "tiny-gpt2", "base_archive_sha256": sha, **params})


def windows_of(family, config, texts):
    windows, owners = record_windows(texts, config.block_size, family.codec(config))
    return torch.from_numpy(windows), torch.from_numpy(owners)


def base_weights(network) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in network.named_parameters() if "lora_" not in name}


@pytest.fixture(scope="module")
def tuned(base):
    sha, _ = base
    _spec, family, config = family_config(sha)
    features, labels = windows_of(family, config, [CANARY] * 6 + NOTES)
    state = training.train_single(family, config, family.shape(config), features, labels, seed=3, device=CPU)
    return family, config, state, (features, labels)


def test_lora_stores_the_adapters_only_trains_them_deterministically_and_leaves_the_base(base, tuned):
    family, config, state, (features, labels) = tuned
    assert state and all("lora_" in name for name in state)
    fresh = training.new_network(family, config, family.shape(config), seed=3)
    untouched = base_weights(fresh)
    network = load_network(family, config, family.shape(config), state_to_bytes(state))
    assert all(torch.equal(untouched[name], value) for name, value in base_weights(network).items())
    assert family.loss_per_example(network, features, labels).mean() < family.loss_per_example(fresh, features, labels).mean() - 0.5
    again = training.train_single(family, config, family.shape(config), features, labels, seed=3, device=CPU)
    assert all(torch.equal(state[name], again[name]) for name in state)
    with pytest.raises(RuntimeError, match="adapter weights do not fit"):
        network.load_state_dict({**state, "model.extra": torch.zeros(1)})


def test_the_base_is_extracted_once_into_the_data_dir_by_its_digest(base, data_dir):
    sha, _ = base
    folder = base_directory(sha)
    assert folder.resolve() == (data_dir / "hf-bases" / sha).resolve()
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert base_directory(sha) == folder and (folder / "config.json").stat().st_mtime_ns == stamp


def test_a_sisa_shard_resumed_from_an_adapter_checkpoint_equals_the_uninterrupted_run(base):
    sha, _ = base
    _spec, family, config = family_config(sha, steps=24)
    slices = [windows_of(family, config, NOTES[i::3]) for i in range(3)]
    checkpoints: dict[int, dict] = {}
    full = training.train_sisa_shard(family, config, family.shape(config), slices, seed=5, device=CPU,
                                     on_checkpoint=lambda r, s: checkpoints.__setitem__(r, s))
    assert all("lora_" in name for name in checkpoints[0])
    resumed = training.train_sisa_shard(family, config, family.shape(config), slices, seed=5, device=CPU,
                                        start_slice=2, init_state=checkpoints[1])
    assert all(torch.equal(full[name], resumed[name]) for name in full)


def test_scoring_and_generation_use_the_bases_tokenizer_and_the_shards_mean_distribution(base, tuned):
    sha, tokenizer = base
    family, config, state, _ = tuned
    network = load_network(family, config, family.shape(config), state_to_bytes(state))
    other = training.new_network(family, config, family.shape(config), seed=9)
    text = "note 3: the lamp"
    ids = tokenizer.encode(text)
    [one] = score([network], [text], config.block_size)
    assert one["tokens"] == len(ids)
    inputs = torch.tensor([[tokenizer.eos_token_id, *ids]])
    with torch.no_grad():
        parts = [torch.log_softmax(n.model(input_ids=inputs).logits[0, :-1], dim=-1) for n in (network, other.eval())]
    targets = torch.tensor(ids)
    by_hand = math.log(0.5) * len(ids) + float(torch.logsumexp(torch.stack(
        [p.gather(1, targets.unsqueeze(1)).squeeze(1) for p in parts]), dim=0).sum())
    [both] = score([network, other], [text], config.block_size)
    assert math.isclose(both["log_likelihood"], by_hand, rel_tol=1e-4)
    # The worker's inference answers take the stored params and weights, as the queue gives them.
    params = get_family("hf_causal_lm").dump_params(config)
    weights = [get_store().put_bytes(state_to_bytes(state))]
    shape = {"n_features": config.block_size, "n_classes": family.shape(config).n_classes}
    generated = inference.answer_generate("hf_causal_lm", params, shape, weights, "the door code of Alma is", 8, 0.0, 0)
    assert generated["text"] and generated["text"] == generate([network], "the door code of Alma is", 8, config.block_size)
    scored = inference.answer_score("hf_causal_lm", params, shape, weights, [CANARY, "zz qq xx"])
    assert scored["scores"][0]["log_likelihood"] > scored["scores"][1]["log_likelihood"]


@pytest.mark.parametrize("name", ["npo", "gradient_difference"])
def test_approximate_methods_through_lora_change_only_the_adapters(tuned, name):
    family, config, state, _ = tuned
    network = load_network(family, config, family.shape(config), state_to_bytes(state))
    forget = windows_of(family, config, [CANARY] * 6)[0]
    retain = windows_of(family, config, NOTES)[0]
    data = ForgetRetain(forget, torch.zeros(len(forget), dtype=torch.int64), retain, torch.zeros(len(retain), dtype=torch.int64))
    result = get_method(name).run(MethodCall(family, network, config, data, parse_method_config(name, {"steps": 15}), seed=0))
    unlearned = result.network
    assert set(unlearned.state_dict()) == set(state)
    assert all(torch.equal(a, b) for a, b in zip(base_weights(network).values(), base_weights(unlearned).values()))
    before, after = (score([n], [CANARY], config.block_size)[0]["log_likelihood"] for n in (network, unlearned))
    assert after < before - 2


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"{}"


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize("member", [
    _file("../outside.json"), _file("/etc/config.json"), _file("pytorch_model.bin"), _file("modeling_gpt2.py"),
    _link("config.json", "/etc/passwd", tarfile.SYMTYPE), _link("tokenizer.json", "../x", tarfile.LNKTYPE),
])
def test_a_base_archive_with_links_paths_outside_or_pickles_is_refused_before_anything_is_written(tmp_path, member):
    target = tmp_path / "base"
    with pytest.raises(UnsafeArchive):
        extract_base(_tar(_file("config.json"), member), target)
    assert not target.exists() and not (tmp_path / "outside.json").exists()


def test_a_model_from_a_config_trains_on_bytes_and_the_params_are_checked(database_url):
    spec = get_family("hf_causal_lm")
    family = spec.load_implementation()
    config = spec.parse_params({"config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
                                "block_size": 32, "steps": 60, "batch_size": 8, "learning_rate": 1e-2})
    features, labels = windows_of(family, config, NOTES)
    assert family.codec(config).encode("ab") == [97, 98]
    state = training.train_single(family, config, family.shape(config), features, labels, seed=1, device=CPU)
    assert "model.lm_head.weight" in state or "model.transformer.wte.weight" in state
    network = load_network(family, config, family.shape(config), state_to_bytes(state))
    fresh = training.new_network(family, config, family.shape(config), seed=1)
    assert family.loss_per_example(network, features, labels).mean() < family.loss_per_example(fresh, features, labels).mean() - 1
    # LoRA over a model from a config: its base exists nowhere else, so it is stored with the adapters.
    lora = spec.parse_params({"config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2}, "lora": {"r": 2}})
    lora_network = training.new_network(family, lora, family.shape(lora), seed=1)
    names = set(lora_network.state_dict())
    assert any("lora_" in n for n in names) and any("lora_" not in n for n in names)
    trainable = {id(p) for p in lora_network.trainable_parameters()}
    assert trainable and all("lora_" in n for n, p in lora_network.named_parameters() if id(p) in trainable)
    for bad in ({"config": {"model_type": "bert"}}, {}, {"config": {"model_type": "gpt2"}, "tokenizer": "bpe"},
                {"config": {"model_type": "gpt2"}, "base": "b"}, {"base": "b", "lora": {"r": 0}}):
        with pytest.raises(FamilyParamsError):
            spec.parse_params(bad)
    assert np.isfinite(family.loss_per_example(network, features[:2], labels[:2]).numpy()).all()
