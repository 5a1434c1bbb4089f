"""What the training and reference-refill jobs hand between their steps, typed, as the unlearning
job does (app/unlearning/types.py): the app's step services (app/training/service.py,
app/training/reference_refill.py) answer and accept these frozen records, and the workers train
on them without ever seeing a row.

Workers import this module; it imports neither torch, numpy nor the workers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from app.families.shape import Shape
from app.unlearning.types import JsonObject, Shard, Sisa


@dataclass(frozen=True)
class TrainingPlan:
    """A model's first training (`service.start`): its settings and the dataset version it trains on."""

    model_id: uuid.UUID
    family: str
    params: JsonObject
    seed: int
    sisa: Sisa | None
    holdout_fraction: float
    features: tuple[str, ...]
    classes: int
    dataset_version_id: uuid.UUID
    dataset_sha: str
    # A text dataset (a language model's): records are texts, not feature rows.
    text: bool
    # How many reference models the per-record audit needs (0 for an exact unlearning method).
    reference_pool: int


@dataclass(frozen=True)
class TrainedModel:
    """What the training job produced, its artifacts already stored (`service.record_trained`)."""

    params: JsonObject
    shape: Shape
    manifest_sha: str
    shards: tuple[Shard, ...]
    metrics: JsonObject
    # Reference pool position → stored weights hash.
    references: Mapping[int, str]


@dataclass(frozen=True)
class RefillPlan:
    """The positions of a model's reference pool to train, on its current version's data
    (`reference_refill.start`)."""

    model_id: uuid.UUID
    family: str
    params: JsonObject
    shape: Shape
    seed: int
    manifest_sha: str
    features: tuple[str, ...]
    dataset_version_id: uuid.UUID
    dataset_sha: str
    text: bool
    pool_size: int
    missing: tuple[int, ...]
