"""Objects a client owns, created over the API: erasure requests, datasets and imported models.

A model is imported (weights trained here, not by a worker) so that tests of reads, weights and
predictions need no job worker; predictions need only the `inference_worker` fixture.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

from tests.dataset_files import csv_bytes, digits_table, upload

N_FEATURES = 64
N_CLASSES = 10


def identifier(kind: str, tag: str = "obj") -> str:
    """A subject identifier of `kind` that no other call returns, named after `tag` (the test file) so a
    row left behind says which test wrote it."""
    token = uuid.uuid4().hex
    if kind == "email":
        return f"{tag}-{token[:10]}@example.org"
    return f"{tag}-{token}"


def request_body(
    tag: str = "obj", *, identify: Iterable[str] = ("email",), identifiers: dict | None = None, **fields,
) -> dict:
    """The body of an erasure request: a GDPR request from the portal for a subject of its own.

    The subject has a fresh identifier of each kind in `identify` (see `identifier`), or exactly the
    given `identifiers`; `fields` replace or add top-level fields (`subject=` replaces the whole
    subject). Test files bind their variant once, e.g.
    `request_body = functools.partial(objects.request_body, "batch", source="batch")`.
    """
    subject = dict(identifiers) if identifiers is not None else {kind: identifier(kind, tag) for kind in identify}
    body = {"subject": {"identifiers": subject}, "jurisdiction": "gdpr", "source": "portal"}
    body.update(fields)
    return body


def hold_kinds(client, headers, *kinds: str) -> None:
    """Make the key's client hold `kinds` (requests by other kinds than email and phone answer
    422 until a dataset or link holds them, and requests only by kinds nothing holds wait in
    needs_review): link a fresh identifier of each to a fresh e-mail. `hold_kinds(c, h, "email")`
    makes e-mail held, so that a request by an e-mail found nowhere completes as no_data_found."""
    identifiers = [{"kind": kind, "value": identifier(kind, "held")} for kind in ("email", *kinds)]
    response = client.post("/v1/identities/links", json={"identifiers": identifiers}, headers=headers)
    assert response.status_code == 201, response.text


def create_request(client, headers, **overrides) -> dict:
    response = client.post("/v1/erasure-requests", json=request_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


_DIGITS_CSV: bytes | None = None


def digits_csv() -> bytes:
    global _DIGITS_CSV
    if _DIGITS_CSV is None:
        _DIGITS_CSV = csv_bytes(digits_table(subjects=50))
    return _DIGITS_CSV


def create_dataset(client, headers, name: str = "digits") -> dict:
    response = upload(client, headers, digits_csv(), name=name)
    assert response.status_code == 201, response.text
    return response.json()


def logistic_weights(seed: int = 0) -> bytes:
    import torch

    from workers.engine.serialization import state_to_bytes

    generator = torch.Generator().manual_seed(seed)
    return state_to_bytes({
        "weight": torch.randn(N_CLASSES, N_FEATURES, generator=generator) * 0.01,
        "bias": torch.zeros(N_CLASSES),
    })


def import_model(client, headers, dataset_version_id: str, name: str = "digits-lr", record_ids=range(100)) -> dict:
    metadata = {
        "name": name, "family": "logistic_regression", "dataset_version_id": dataset_version_id,
        "record_ids": list(record_ids),
    }
    response = client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("weights.safetensors", logistic_weights(), "application/octet-stream")}, headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


# Language models: a text dataset and causal_lm weights (freshly initialised unless given).
TINY_LM = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "steps": 60, "batch_size": 16,
           "learning_rate": 0.01}


def create_text_dataset(client, headers, name: str = "notes", content: bytes | None = None) -> dict:
    from tests.text_files import csv_bytes as text_csv
    from tests.text_files import notes_table, upload_text

    response = upload_text(client, headers, content or text_csv(notes_table(subjects=20, per_subject=3)), name=name)
    assert response.status_code == 201, response.text
    return response.json()


def lm_weights(params: dict | None = None, seed: int = 0, state: dict | None = None) -> bytes:
    from app.families.registry import get_family
    from workers.engine.serialization import state_to_bytes
    from workers.engine.training import copy_state, new_network

    if state is None:
        spec = get_family("causal_lm")
        family, config = spec.load_implementation(), spec.parse_params(params or TINY_LM)
        state = copy_state(new_network(family, config, family.shape(config), seed))
    return state_to_bytes(state)


def import_language_model(client, headers, dataset_version_id: str, name: str = "notes-lm", params: dict | None = None,
                          weights: bytes | None = None, record_ids=range(30)) -> dict:
    metadata = {"name": name, "family": "causal_lm", "dataset_version_id": dataset_version_id,
                "record_ids": list(record_ids), "params": params or TINY_LM}
    response = client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("weights.safetensors", weights or lm_weights(params), "application/octet-stream")},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


# Image models (family image_diffusion): a small U-Net over 16×16 grey images.
TINY_DIFFUSION = {"image_size": 16, "channels": 1, "block_out_channels": [8, 16], "num_train_timesteps": 20,
                  "sample_steps": 10, "epochs": 1, "batch_size": 8}


def create_image_dataset(client, headers, name: str = "art", *, with_labels: bool = True, **works) -> dict:
    """A zip of creators' works (tests/image_files.py) uploaded as an image dataset."""
    from tests.image_files import creator_works, images_zip, upload_images

    content = images_zip(creator_works(**works), with_labels=with_labels)
    response = upload_images(client, headers, content, name=name, **({} if with_labels else {"label_column": None}))
    assert response.status_code == 201, response.text
    return response.json()


def diffusion_weights(params: dict | None = None, n_classes: int = 1, seed: int = 0) -> bytes:
    """safetensors of a U-Net of these params, random but of exactly the family's shapes."""
    import numpy as np
    from safetensors.numpy import save

    from app.families.registry import get_family

    spec = get_family("image_diffusion")
    shapes = spec.parameter_shapes(spec.parse_params(params or TINY_DIFFUSION), 0, n_classes)
    rng = np.random.default_rng(seed)
    return save({name: (rng.standard_normal(shape) * 0.02).astype(np.float32) for name, shape in shapes.items()})


def import_image_model(client, headers, dataset_version_id: str, name: str = "art-ddpm", params: dict | None = None,
                       n_classes: int = 1, record_ids=range(6)) -> dict:
    metadata = {"name": name, "family": "image_diffusion", "dataset_version_id": dataset_version_id,
                "record_ids": list(record_ids), "params": params or TINY_DIFFUSION}
    response = client.post(
        "/v1/models/import", data={"metadata": json.dumps(metadata)},
        files={"weights": ("weights.safetensors", diffusion_weights(params, n_classes), "application/octet-stream")},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()
