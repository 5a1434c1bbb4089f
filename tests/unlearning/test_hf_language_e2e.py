"""A Hugging Face language model from its base to a certified erasure, through the API and a real
Celery worker: a tiny GPT-2 saved with save_pretrained is imported as a base (POST /v1/models/import,
kind "base"), fine-tuned with SISA over LoRA adapters on notes, answers generate and score, and a subject is erased. One
adapter is retrained and the certificate names it; the old version's weights answer 410, while
the unchanged adapter and the base stay stored and shared."""

from __future__ import annotations

import pytest

from tests.factories import approved_request, train, trained_subjects
from tests.hf_models import archive, post_base, save_gpt2
from tests.text_files import CANARY_PREFIX, csv_bytes, notes_table, upload_text
from tests.worker import wait_terminal

pytestmark = pytest.mark.timeout(600)
SEED, HOLDOUT = 3, 0.2
SISA = {"shards": 2, "slices": 2}
TUNE = {"lora": {"r": 4, "alpha": 8}, "block_size": 32, "steps": 40, "batch_size": 8, "learning_rate": 1e-2}


def _subject() -> int:
    trained = trained_subjects([f"u{i:03d}" for i in range(12)], HOLDOUT, SEED)
    return next(i for i in range(12) if f"u{i:03d}" in trained)


def _versions(model_name: str) -> dict[int, list[dict]]:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models.models import Model, ModelVersion

    with session_scope() as session:
        model = session.scalar(select(Model).where(Model.name == model_name))
        return {v.version: sorted(v.shards, key=lambda s: s["shard"])
                for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id))}


def test_a_base_fine_tuned_with_sisa_lora_serves_and_erases_one_adapter(client, admin, worker, tmp_path):
    from app.artifacts.store import get_store
    from app.certificates.sections import BASE_SCOPE_STATEMENT
    from app.certificates.signing import verify_document

    subject = _subject()
    table = notes_table(subjects=12, per_subject=3, canaries={subject: 3})
    _model, _tokenizer = save_gpt2(tmp_path / "base", [f"{CANARY_PREFIX}{i:04d}." for i in range(0, 10_000, 97)]
                                   + table.column("text").to_pylist())
    imported = post_base(client, admin, archive(tmp_path / "base"))
    assert imported.status_code == 201, imported.text
    base_sha = imported.json()["archive_sha256"]

    dataset = upload_text(client, admin, csv_bytes(table))
    assert dataset.status_code == 201, dataset.text
    params = {**TUNE, "base": "tiny-gpt2"}
    train(client, admin, dataset.json()["dataset_id"], "notes-hf", family="hf_causal_lm", timeout=400,
          holdout_fraction=HOLDOUT, params=params, seed=SEED, sisa=SISA)

    generated = client.post("/v1/models/notes-hf/generate", headers=admin,
                            json={"prompt": CANARY_PREFIX, "max_new_tokens": 6, "temperature": 0, "seed": 0})
    assert generated.status_code == 200, generated.text
    assert isinstance(generated.json()["text"], str) and generated.json()["version"] == 1
    scored = client.post("/v1/models/notes-hf/score", headers=admin,
                         json={"texts": ["ticket from u001: the lamp is broken.", "qz xv kj wp"]})
    assert scored.status_code == 200, scored.text
    scores = scored.json()["scores"]
    per_token = [s["log_likelihood"] / s["tokens"] for s in scores]
    assert all(s["tokens"] > 0 for s in scores) and per_token[0] > per_token[1], scores

    request_id = approved_request(client, admin, f"u{subject:03d}")
    result = wait_terminal(client, admin, request_id, timeout=400)
    assert result["status"] == "completed", result["status_reason"]

    model = client.get("/v1/models/notes-hf", headers=admin).json()
    assert model["current"] == 2 and model["versions"][1]["origin"]["method"] == "sisa"
    shards = _versions("notes-hf")
    changed = [s["shard"] for s, t in zip(shards[1], shards[2], strict=True) if s["weights"] != t["weights"]]
    assert len(changed) == 1, shards
    [kept] = [t for t in shards[2] if t["shard"] not in changed]
    store = get_store()
    assert store.exists(kept["weights"]) and store.exists(base_sha)
    assert client.get("/v1/models/notes-hf/versions/1/weights", headers=admin).status_code == 410
    assert client.get("/v1/models/notes-hf/versions/2/weights", headers=admin).status_code == 200

    document = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=admin).json()
    assert verify_document(document, client.get("/v1/keys/signing").json()["public_key"]) == (True, "valid")
    [entry] = document["certificate"]["models"]
    assert entry["method_kind"] == "exact" and entry["exact"]["shards_retrained"] == changed
    assert entry["base"]["archive_sha256"] == base_sha and entry["base"]["statement"] == BASE_SCOPE_STATEMENT
