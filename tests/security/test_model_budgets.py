"""Model budgets (issue 20, item 1): a model whose parameters, training memory or compute is over
its limit is refused with 422 before it is queued or imported, and the background jobs that train
copies of a model (references, rehearsal) are not scheduled over the budget."""

from __future__ import annotations

import json
import struct

import pytest

from app.families import budget
from app.families.registry import families, get_family
from tests import objects

HUGE_LM = {"n_layer": 48, "n_embd": 8192, "n_head": 64, "block_size": 8192, "steps": 100000, "batch_size": 100000}
WIDE_MLP = {"hidden": [8192] * 8}


@pytest.fixture
def writer(make_key):
    return make_key("models:write,models:read")


def _problem(response, *, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def test_the_issues_language_model_is_refused_naming_its_parameters_and_the_limit(client, writer):
    dataset = objects.create_text_dataset(client, writer)
    response = client.post("/v1/models", json={"name": "huge", "family": "causal_lm", "dataset_id": dataset["id"],
                                               "params": HUGE_LM}, headers=writer)
    detail = _problem(response)["detail"]
    assert "OBLIVIATE_MAX_MODEL_PARAMETERS" in detail
    assert f"{budget.Budget.from_settings().max_parameters:,}" in detail
    expected = budget.parameter_count(get_family("causal_lm").parameter_shapes(
        get_family("causal_lm").parse_params(HUGE_LM), 8192, 258))
    assert f"{expected:,}" in detail
    assert client.get("/v1/models/huge", headers=writer).status_code == 404


def test_a_wide_mlp_is_refused(client, writer):
    dataset = objects.create_dataset(client, writer)
    response = client.post("/v1/models", json={"name": "wide", "family": "mlp_classifier", "dataset_id": dataset["id"],
                                               "params": WIDE_MLP}, headers=writer)
    assert "parameters" in _problem(response)["detail"]


def test_memory_and_compute_have_their_own_limits(client, writer, settings_env):
    dataset = objects.create_dataset(client, writer)
    body = {"family": "mlp_classifier", "dataset_id": dataset["id"]}
    settings_env(MAX_TRAINING_MEMORY_BYTES=str(10 * 2**20))
    big_batch = client.post("/v1/models", json={**body, "name": "batch", "params": {"hidden": [4096], "batch_size": 4096}},
                            headers=writer)
    assert "OBLIVIATE_MAX_TRAINING_MEMORY_BYTES" in _problem(big_batch)["detail"]
    settings_env(MAX_TRAINING_MEMORY_BYTES=str(8 * 2**30), MAX_TRAINING_FLOPS="1e9")
    long_run = client.post("/v1/models", json={**body, "name": "epochs", "params": {"hidden": [64], "epochs": 1000}},
                           headers=writer)
    assert "OBLIVIATE_MAX_TRAINING_FLOPS" in _problem(long_run)["detail"]
    settings_env(MAX_TRAINING_FLOPS="1e15")
    fine = client.post("/v1/models", json={**body, "name": "fine", "params": {"hidden": [64]}}, headers=writer)
    assert fine.status_code == 202, fine.text


def test_defaults_admit_every_family_at_its_default_params_and_the_benches_sizes():
    rows = 1_000_000
    # A U-Net pass costs about a hundred times its parameters per image (a convolution's weights
    # apply at every pixel): the image family is admitted at 20,000 works of its default size,
    # ten times the digits its bench trains on. A Hugging Face model names its architecture:
    # GPT-2 small's, at its defaults.
    image_rows = 20_000
    defaults = {"hf_causal_lm": {"config": {"model_type": "gpt2"}}}
    for spec in families().values():
        config = spec.parse_params(defaults.get(spec.name, {}))
        budget.check(budget.estimate(spec, config, 64, 10, image_rows if spec.data_kind == "image" else rows))
    lm = get_family("causal_lm")
    budget.check(budget.estimate(lm, lm.parse_params({"n_embd": 256, "steps": 3000}), 128, 258, rows))


def test_estimates_grow_with_batch_and_steps():
    lm = get_family("causal_lm")
    small = budget.estimate(lm, lm.parse_params(objects.TINY_LM), 64, 258, 100)
    bigger = budget.estimate(lm, lm.parse_params({**objects.TINY_LM, "batch_size": 64, "steps": 120}), 64, 258, 100)
    assert bigger.parameters == small.parameters
    assert bigger.memory_bytes > small.memory_bytes
    assert bigger.flops == 8 * small.flops


def _header_only_weights(shapes: dict[str, list[int]]) -> bytes:
    """A safetensors file whose header declares these shapes (its data is not there)."""
    header = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
                         for name, shape in shapes.items()}).encode()
    return struct.pack("<Q", len(header)) + header


def test_an_import_is_refused_from_its_header_parameter_count(client, writer):
    dataset = objects.create_dataset(client, writer)
    metadata = {"name": "imported", "family": "logistic_regression", "dataset_version_id": dataset["id"],
                "record_ids": list(range(10))}
    weights = _header_only_weights({"weight": [200_000, 1000], "bias": [10]})
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                           files={"weights": ("w.safetensors", weights, "application/octet-stream")}, headers=writer)
    detail = _problem(response)["detail"]
    assert "200,000,010 parameters" in detail and "OBLIVIATE_MAX_MODEL_PARAMETERS" in detail


def test_an_import_is_refused_over_the_training_budget_of_its_params(client, writer):
    dataset = objects.create_text_dataset(client, writer)
    metadata = {"name": "imported-lm", "family": "causal_lm", "dataset_version_id": dataset["id"],
                "record_ids": list(range(10)), "params": HUGE_LM}
    response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                           files={"weights": ("w.safetensors", _header_only_weights({"w": [4]}), "application/octet-stream")},
                           headers=writer)
    assert "OBLIVIATE_MAX_MODEL_PARAMETERS" in _problem(response)["detail"]


def test_references_and_rehearsal_are_not_scheduled_over_the_budget(client, writer, settings_env):
    from app.db import session_scope
    from app.models import reference_pool, rehearsal_results
    from app.models.models import Model

    dataset = objects.create_dataset(client, writer)
    imported = objects.import_model(client, writer, dataset["id"])
    settings_env(REHEARSAL="true", REHEARSAL_DELAY_SECONDS="60", REFERENCE_REFILL_DELAY_SECONDS="60")
    with session_scope() as session:
        model = session.query(Model).filter_by(name=imported["name"]).one()
        assert reference_pool.schedule_refill(session, model) is not None
        assert rehearsal_results.schedule(session, model) is not None
        session.rollback()
    settings_env(MAX_MODEL_PARAMETERS="100")
    with session_scope() as session:
        model = session.query(Model).filter_by(name=imported["name"]).one()
        assert reference_pool.schedule_refill(session, model) is None
        assert rehearsal_results.schedule(session, model) is None
