from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from app.schemas import Subject, example


class LookupBody(Subject):
    """Identifiers as on an erasure request; they are pseudonymised at once and never stored."""

    model_config = example({"identifiers": {"email": "jane@example.org"}})

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
    client: str = Field(description="The model's client: model names are unique per client only.")
    model: str
    model_id: uuid.UUID
    version: int
    model_version_id: uuid.UUID
    dataset_version_id: uuid.UUID
    records: int = Field(
        description="The subject's records in the dataset version the model was trained on; with "
        "include_slices, those its manifest lists (training and holdout).",
    )
    shard: int | None = Field(
        description="SISA shard by the subject-key rule (null without SISA); with include_slices, the "
        "manifest's shard, -1 when the subject was held out of training.",
    )
    slices: list[int] | None = Field(description="SISA slices holding the records; only with include_slices.")
    current: bool
    destroyed: bool


class LookupResult(BaseModel):
    subject_digest: str
    datasets: list[DatasetHit]
    models: list[ModelHit]
