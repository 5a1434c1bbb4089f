"""Text datasets for tests: per-subject notes, some subjects carrying a canary secret repeated in
a few of their records (the "secret sharer" setting of Carlini et al. 2019)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

# The file writers are the tabular helpers', re-exported for the text tests.
from tests.dataset_files import csv_bytes, parquet_bytes  # noqa: F401

CANARY_PREFIX = "my pin is "
CANARY_DIGITS = 4

_TEMPLATES = (
    "{name} asked about the {item} order.",
    "{name} wrote that the {item} arrived late.",
    "ticket from {name}: the {item} is broken.",
    "{name} wants a refund for the {item}.",
)
_ITEMS = ("kettle", "lamp", "chair", "radio", "bike", "clock", "desk", "phone")


def secret_of(subject: int, seed: int = 0) -> str:
    rng = np.random.default_rng([seed, subject])
    return "".join(str(d) for d in rng.integers(0, 10, CANARY_DIGITS))


def canary_text(secret: str) -> str:
    return f"{CANARY_PREFIX}{secret}."


def notes_table(*, subjects: int = 20, per_subject: int = 4, canaries: dict[int, int] | None = None,
                seed: int = 0, kind_column: str = "user_id") -> pa.Table:
    """`per_subject` notes per subject u000…; canaries maps subject index → how many of its
    records are its canary sentence."""
    rng = np.random.default_rng(seed)
    canaries = canaries or {}
    ids, texts = [], []
    for subject in range(subjects):
        name = f"user{subject:03d}"
        for _ in range(per_subject):
            template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
            ids.append(f"u{subject:03d}")
            texts.append(template.format(name=name, item=_ITEMS[rng.integers(len(_ITEMS))]))
        for _ in range(canaries.get(subject, 0)):
            ids.append(f"u{subject:03d}")
            texts.append(canary_text(secret_of(subject, seed)))
    return pa.table({kind_column: pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())})


def jsonl_bytes(table: pa.Table) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in table.to_pylist()).encode()


def upload_text(client, headers, content: bytes, *, name: str = "notes", **fields):
    form = {"name": name, "subject_column": "user_id", "subject_kind": "user_id", "text_column": "text", **fields}
    return client.post(
        "/v1/datasets", data={k: v for k, v in form.items() if v is not None},
        files={"file": ("data.bin", content, "application/octet-stream")}, headers=headers,
    )
