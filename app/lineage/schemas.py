from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from app.requests.schemas import Subject


class LookupBody(Subject):
    """Identifiers as on an erasure request; they are pseudonymised at once and never stored."""

    include_slices: bool = Field(
        default=False,
        description="Also read each SISA model version's manifest to answer the subject's slices "
        "(and its real shard, -1 when held out). Costs one manifest read per model version the "
        "first time; without it `shard` comes from the subject key and `slices` is null.",
    )


class DatasetHit(BaseModel):
    dataset_id: uuid.UUID
    name: str
    version: int
    dataset_version_id: uuid.UUID
    records: int
    current: bool
    destroyed: bool


class ModelHit(BaseModel):
    model: str
    model_id: uuid.UUID
    version: int
    model_version_id: uuid.UUID
    dataset_version_id: uuid.UUID
    records: int
    shard: int | None
    slices: list[int] | None
    current: bool
    destroyed: bool


class LookupResult(BaseModel):
    subject_digest: str
    datasets: list[DatasetHit]
    models: list[ModelHit]
