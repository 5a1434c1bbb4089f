"""Importing a Hugging Face base (POST /v1/models/import with kind "base"): a tiny GPT-2 saved
with save_pretrained is checked without torch, normalised into one tar, stored, audited with its
hashes and listed; hostile archives are refused before anything is stored; hf_causal_lm models
name the base and carry what a worker needs to fetch it."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zipfile

import pytest
from sqlalchemy import select

from tests.factories import WRITER_SCOPES, assert_problem, row_count
from tests.hf_models import TINY_GPT2, import_base, pack, post_base, save_tiny_gpt2
from tests.objects import create_text_dataset


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture(scope="module")
def parameters(saved) -> int:
    import transformers

    return sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(saved).parameters())


def _copy(saved, tmp_path, **edits):
    """A copy of the saved folder; edits: file name → new bytes (None removes the file)."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for name, data in edits.items():
        target = folder / name.replace("__", ".")
        if data is None:
            target.unlink()
        else:
            target.write_bytes(data)
    return folder


def _config(saved, **changes) -> bytes:
    config = json.loads((saved / "config.json").read_text())
    return json.dumps({**config, **changes}).encode()


def _nothing_stored(before_events: int) -> None:
    from app.audit.models import AuditEvent
    from app.models.models import ModelBase

    assert row_count(ModelBase) == 0
    assert row_count(AuditEvent) == before_events


def test_a_saved_gpt2_is_checked_normalised_stored_and_audited(client, writer, make_key, saved, parameters):
    from app.artifacts.store import get_store
    from app.audit.models import AuditEvent
    from app.db import session_scope

    base = import_base(client, writer, saved)
    assert base["architecture"] == "gpt2"
    assert base["parameters"] == parameters  # from the safetensors header, as transformers counts them
    on_disk = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in saved.iterdir()}
    assert {name: file["sha256"] for name, file in base["files"].items()} == on_disk
    # The stored form: the same files at the top of an uncompressed tar, whatever the upload's packing.
    stored = get_store().get_bytes(base["archive_sha256"])
    with tarfile.open(fileobj=io.BytesIO(stored)) as archive:
        assert sorted(archive.getnames()) == sorted(on_disk)
        assert all(member.isreg() and member.mtime == 0 for member in archive.getmembers())
    packed = [pack(saved, kind="zip"), pack(saved, kind="tgz", prefix="tiny-gpt2/"), _tar_c(saved)]
    for kind, archive in zip(("zip", "tgz", "tar"), packed):
        again = post_base(client, writer, archive, name=f"again-{kind}")
        assert again.status_code == 201, again.text
        assert again.json()["archive_sha256"] == base["archive_sha256"]
    with session_scope() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.stream == f"model_base:{base['id']}"))
        assert event.type == "model_base.imported"
        assert event.data["archive_sha256"] == base["archive_sha256"]
        assert event.data["upload_sha256"] == hashlib.sha256(pack(saved)).hexdigest()
        assert event.data["files"] == base["files"]
    listed = client.get("/v1/models/bases", headers=writer).json()["items"]
    assert {item["name"] for item in listed} == {"tiny-gpt2", "again-zip", "again-tgz", "again-tar"}
    assert client.get("/v1/models/bases/tiny-gpt2", headers=writer).json() == base
    other = make_key("models:read,models:write", client="other")
    assert_problem(client.get("/v1/models/bases/tiny-gpt2", headers=other), 404)
    assert client.get("/v1/models/bases", headers=other).json()["items"] == []
    assert_problem(post_base(client, writer, pack(saved)), 409)


def _tar_c(folder) -> bytes:
    """What `tar cf - -C folder .` writes: the folder itself as `.`, then `./config.json`…"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def test_sharded_weights_import_with_their_index(client, writer, tmp_path, parameters):
    import transformers

    folder = save_tiny_gpt2(tmp_path / "sharded")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, max_shard_size="200KB")
    shards = sorted(path.name for path in folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    base = import_base(client, writer, folder, name="sharded")
    assert base["parameters"] == parameters
    assert set(shards) <= set(base["files"])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    moved = next(iter(index["weight_map"]))  # a tensor said to be in another shard than its own
    index["weight_map"][moved] = next(name for name in shards if name != index["weight_map"][moved])
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "index" in assert_problem(post_base(client, writer, pack(folder), name="bad-index"), 422)["detail"]


def _header_only(shapes: dict[str, list[int]]) -> bytes:
    header = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()})
    return struct.pack("<Q", len(header)) + header.encode()


def _member(name: str, **fields) -> bytes:
    """A tar holding one special member (a link, a device) beside nothing else."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        for key, value in fields.items():
            setattr(info, key, value)
        archive.addfile(info)
    return buffer.getvalue()


def _with_member(saved, **fields) -> bytes:
    """The saved folder as a tar, followed by one special member."""
    plain = pack(saved)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain)) as source, tarfile.open(fileobj=buffer, mode="w") as archive:
        for member in source.getmembers():
            archive.addfile(member, source.extractfile(member))
        info = tarfile.TarInfo(fields.pop("name"))
        for key, value in fields.items():
            setattr(info, key, value)
        archive.addfile(info)
    return buffer.getvalue()


HOSTILE = {
    "pickle weights": (lambda s, t: pack(s, extra={"pytorch_model.bin": b"\x80\x04K\x01."}), "pytorch_model.bin is a pickle"),
    "pickle instead of safetensors": (
        lambda s, t: pack(_copy(s, t, model__safetensors=None), extra={"model.pt": b"\x80\x04."}), "model.pt is a pickle"),
    "remote code in config": (lambda s, t: pack(_copy(s, t, config__json=_config(
        s, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilModel"}))), "auto_map"),
    "remote code in tokenizer config": (lambda s, t: pack(_copy(s, t, tokenizer_config__json=json.dumps(
        {"auto_map": {"AutoTokenizer": ["x.Y", None]}}).encode())), "auto_map"),
    "custom code file": (lambda s, t: pack(s, extra={"modeling_evil.py": b"import os\n"}), "modeling_evil.py is code"),
    "unknown architecture": (lambda s, t: pack(_copy(s, t, config__json=_config(s, model_type="bert"))), "model_type"),
    "shapes beyond config": (lambda s, t: pack(_copy(s, t, config__json=_config(s, n_embd=32))), "shape"),
    "oversized header shape": (lambda s, t: pack(_copy(s, t, model__safetensors=_header_only(
        {"transformer.wte.weight": [2**20, 2**20]}))), "does not match its shape"),
    "path climbing out": (lambda s, t: pack(s, extra={"../config.json": b"{}"}), "climbing path"),
    "absolute path": (lambda s, t: pack(s, extra={"/etc/config.json": b"{}"}), "absolute"),
    "nested folder": (lambda s, t: pack(s, prefix="a/b/"), "not at the top"),
    "symlink": (lambda s, t: _with_member(s, name="vocab.json", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
    "hard link": (lambda s, t: _with_member(s, name="vocab.json", type=tarfile.LNKTYPE, linkname="config.json"), "link"),
    "device": (lambda s, t: _with_member(s, name="vocab.json", type=tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    "zip symlink": (lambda s, t: _zip_symlink(s), "link"),
    "no weights": (lambda s, t: pack(_copy(s, t, model__safetensors=None)), "no weights"),
    "no tokenizer": (lambda s, t: pack(_copy(s, t, tokenizer__json=None)), "no tokenizer"),
    "not an archive": (lambda s, t: b"just some bytes, neither tar nor zip" * 20, "neither a tar"),
    "pax header bomb": (lambda s, t: _long_pax_header(s), "header of the archive is too long"),
    "personal file name": (lambda s, t: pack(s, extra={"jane.doe@example.org.txt": b"x"}), "file 6"),
}


def _long_pax_header(saved) -> bytes:
    """A member whose pax extended header is 2 MB: tarfile would read it whole."""
    buffer = io.BytesIO(pack(saved))
    data = b"{}"
    with tarfile.open(fileobj=buffer, mode="a", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("vocab.json")
        info.size, info.pax_headers = len(data), {"comment": "x" * 2_000_000}
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip_symlink(saved) -> bytes:
    buffer = io.BytesIO(pack(saved, kind="zip"))
    with zipfile.ZipFile(buffer, "a") as archive:
        info = zipfile.ZipInfo("merges.txt")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_archives_are_refused_and_store_nothing(client, writer, saved, tmp_path, case):
    from app.audit.models import AuditEvent

    build, words = HOSTILE[case]
    before = row_count(AuditEvent)
    problem = assert_problem(post_base(client, writer, build(saved, tmp_path)), 422)
    assert words in problem["detail"]
    assert "jane" not in json.dumps(problem)
    _nothing_stored(before)


def test_byte_limits_hold_for_the_archive_and_what_it_unpacks(client, writer, saved, settings_env):
    from app.audit.models import AuditEvent

    before = row_count(AuditEvent)
    settings_env(MAX_IMPORT_BYTES=str(200_000))  # the archive itself (its weights are 500 KB)
    assert "OBLIVIATE_MAX_IMPORT_BYTES" in assert_problem(post_base(client, writer, pack(saved)), 413)["detail"]
    # A bomb: 40 MB of zeros deflate to 40 KB; unpacking stops at the limit.
    settings_env(MAX_IMPORT_BYTES=str(2_000_000))
    bomb = pack(saved, kind="zip", extra={"merges.txt": bytes(40_000_000)})
    assert len(bomb) < 2_000_000
    assert "Unpacked" in assert_problem(post_base(client, writer, bomb), 413)["detail"]
    _nothing_stored(before)


def test_the_parameter_budget_applies_to_a_base(client, writer, saved, parameters, settings_env):
    settings_env(MAX_MODEL_PARAMETERS=str(parameters - 1))
    assert "OBLIVIATE_MAX_MODEL_PARAMETERS" in assert_problem(post_base(client, writer, pack(saved)), 422)["detail"]
    settings_env(MAX_MODEL_PARAMETERS=str(parameters))
    assert post_base(client, writer, pack(saved)).status_code == 201


def test_parts_must_fit_the_kind(client, writer, saved):
    weights = {"weights": ("w.safetensors", b"\x00" * 16, "application/octet-stream")}
    assert_problem(post_base(client, writer, pack(saved), **weights), 422)
    response = client.post("/v1/models/import", data={"metadata": json.dumps({"kind": "base", "name": "x"})},
                           headers=writer)
    assert_problem(response, 422)


def test_a_model_names_its_clients_base_and_carries_what_the_worker_needs(client, writer, make_key, saved, settings_env):
    from app.db import session_scope
    from app.models import service

    base = import_base(client, writer, saved)
    dataset = create_text_dataset(client, writer)
    body = {"name": "tuned", "family": "hf_causal_lm", "dataset_id": dataset["id"],
            "params": {"base": "tiny-gpt2", "lora": {"r": 4}, "steps": 5, "block_size": 32}}
    response = client.post("/v1/models", json=body, headers=writer)
    assert response.status_code == 202, response.text
    model = client.get("/v1/models/tuned", headers=writer).json()
    assert model["params"]["base_id"] == base["id"]
    assert model["params"]["base_archive_sha256"] == base["archive_sha256"]
    assert model["params"]["architecture"] == "gpt2"
    assert model["params"]["base_config"]["n_embd"] == TINY_GPT2["n_embd"]
    # What an erasure could free: the base's bytes stay referenced, whatever else goes.
    with session_scope() as session:
        assert service.live_references(session, [base["archive_sha256"]]) == {base["archive_sha256"]}

    refusals = [
        ({**body["params"], "base": "missing"}, 404),
        ({**body["params"], "base_archive_sha256": "0" * 64}, 422),  # comes from the base only
        ({**body["params"], "block_size": 512}, 422),  # beyond the base's 128 positions
        ({**body["params"], "lora": {"target_modules": ["q_proj"]}}, 422),  # not a gpt2 layer
    ]
    for number, (params, status) in enumerate(refusals):
        assert_problem(client.post("/v1/models", json={**body, "name": f"bad-{number}", "params": params},
                                   headers=writer), status)
    other = make_key(WRITER_SCOPES, client="other")
    other_dataset = create_text_dataset(client, other)
    assert_problem(client.post("/v1/models", json={**body, "dataset_id": other_dataset["id"]}, headers=other), 404)
    # Budgets hold before anything is queued.
    settings_env(MAX_TRAINING_FLOPS="1e6")
    assert "OBLIVIATE_MAX_TRAINING_FLOPS" in assert_problem(
        client.post("/v1/models", json={**body, "name": "costly"}, headers=writer), 422)["detail"]


def test_a_model_from_a_configuration_and_the_reserved_name(client, writer):
    dataset = create_text_dataset(client, writer)
    body = {"name": "scratch", "family": "hf_causal_lm", "dataset_id": dataset["id"],
            "params": {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 1, "num_attention_heads": 2}, "steps": 5}}
    assert client.post("/v1/models", json=body, headers=writer).status_code == 202
    assert_problem(client.post("/v1/models", json={**body, "name": "bases"}, headers=writer), 422)
    # Weights of this family come in as a base, never as a bare weights file.
    metadata = {"name": "bare", "family": "hf_causal_lm", "dataset_version_id": dataset["id"], "record_ids": [1],
                "params": body["params"]}
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                           files={"weights": ("w.safetensors", b"\x00" * 16, "application/octet-stream")}, headers=writer)
    assert "base" in assert_problem(response, 422)["detail"]


def test_inference_work_counts_the_network_and_its_adapter_for_every_shard(settings_env):
    """generate and score are bounded like causal_lm's, counting tokens as bytes: a byte-level
    tokenizer's token covers at least one byte, so the bound holds for every tokenizer."""
    from app.errors import Unprocessable
    from app.families import hf_architectures as hf
    from app.families.registry import get_family
    from app.models import inference_budget

    spec = get_family("hf_causal_lm")
    arch = hf.parse(TINY_GPT2)
    params = spec.dump_params(spec.parse_params({"base": "tiny", "base_config": arch.to_json(), "lora": {"r": 4}}))
    loaded = {"family": "hf_causal_lm", "params": params, "shape": {"n_features": 64, "n_classes": 0},
              "weights": ["a" * 64, "b" * 64, "c" * 64]}  # three SISA adapters over one base
    network = hf.parameter_count(hf.tensor_shapes(arch)) + hf.parameter_count(hf.lora_shapes(arch, 4, None))
    assert inference_budget.parameters(loaded) == 3 * network
    positions = inference_budget.score_positions(["é" * 40], params["block_size"])
    assert positions == 64 + 64  # 80 bytes: two windows of 64 tokens, advancing by half a block
    settings_env(MAX_INFERENCE_FLOPS=str(2 * 3 * network * positions - 1))
    with pytest.raises(Unprocessable) as refused:
        inference_budget.check(loaded, positions)
    assert "OBLIVIATE_MAX_INFERENCE_FLOPS" in str(refused.value.detail)
