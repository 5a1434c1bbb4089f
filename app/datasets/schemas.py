from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, Field, field_validator

from app.errors import Unprocessable
from app.schemas import Page, StrictModel, example


class DatasetUpload(StrictModel):
    """The multipart form of POST /v1/datasets."""

    file: UploadFile = Field(description=(
        "Parquet or CSV (or JSON Lines for text); one row per record. Images: Parquet with an image column, or a "
        "zip of images with a manifest.csv."))
    name: str = Field(min_length=1, max_length=100, description="Dataset name; an existing name adds a version.",
                      examples=["digits"])
    subject_column: str = Field(min_length=1, max_length=200, description="Column of data-subject identifiers.",
                                examples=["user_id"])
    subject_kind: str = Field(
        min_length=1, max_length=64,
        description="Identifier kind of that column (user_id, email, creator, ...), as used on erasure requests.",
        examples=["user_id"],
    )
    label_column: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["label"],
        description="Column of class labels, for a tabular dataset.",
    )
    text_column: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["text"],
        description="Column of training text, for a text dataset (instead of label_column; no features).",
    )
    image_column: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["file"],
        description=("For an image dataset: the Parquet column of PNG or JPEG bytes, or, for a zip of images, the "
                     "column of its manifest.csv naming each record's file. label_column is then optional."),
    )
    identifier_columns: str | None = Field(
        default=None, examples=['{"email": "email"}'],
        description=("JSON object of identifier kind → column holding other identifiers of the row's subject "
                     "(never features; pseudonymised, never stored), so requests by those kinds find the subject."),
    )
    feature_columns: str | None = Field(
        default=None, examples=["f0,f1,f2"],
        description="Comma-separated names or a JSON list; default: every column but subject, label and identifier columns.",
    )

    @field_validator("feature_columns")
    @classmethod
    def _non_blank(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    def feature_list(self) -> list[str] | None:
        if self.feature_columns is None:
            return None
        text = self.feature_columns.strip()
        if text.startswith("["):
            try:
                names = json.loads(text)
            except json.JSONDecodeError:
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise Unprocessable("feature_columns is not a JSON list of column names.")
            return names
        return [name.strip() for name in text.split(",") if name.strip()]


class ModelRef(BaseModel):
    model: str
    model_id: uuid.UUID
    version: int
    model_version_id: uuid.UUID
    current: bool
    destroyed: bool


class DatasetVersionOut(BaseModel):
    id: uuid.UUID
    version: int
    rows: int
    subjects: int
    sha256: str
    created_at: datetime
    current: bool
    destroyed: bool
    destroyed_at: datetime | None
    parent_version_id: uuid.UUID | None
    origin: dict[str, Any]
    models: list[ModelRef]


class DatasetVersionCreated(BaseModel):
    id: uuid.UUID = Field(description="The new dataset version's id.")
    dataset_id: uuid.UUID
    name: str
    version: int
    rows: int
    subjects: int
    columns: list[str] = Field(description="Feature columns, in the order models receive them.")
    label_column: str | None = Field(description="None for a text dataset.")
    text_column: str | None = Field(description="The text column of a text dataset; None for a tabular one.")
    image_column: str | None = Field(default=None, description="The image column of an image dataset; None otherwise.")
    image_size: list[int] | None = Field(
        default=None, description="[height, width, channels] of every image of an image dataset; None otherwise.")
    subject_kind: str
    sha256: str = Field(description="sha256 of the stored Parquet file.")
    classes: list[Any] = Field(description="Label values; the stored label is the index in this list.")
    filtered_rows: int = Field(description="Rows dropped because their subject was erased before.")
    created_at: datetime


class DatasetOut(BaseModel):
    id: uuid.UUID
    name: str
    subject_kind: str
    label_column: str | None
    text_column: str | None
    image_column: str | None = None
    image_size: list[int] | None = None
    columns: list[str]
    classes: list[Any]
    current_version: int
    created_at: datetime


class DatasetDetail(DatasetOut):
    versions: list[DatasetVersionOut]


class DatasetPage(Page):
    items: list[DatasetOut]


class GrantCreate(StrictModel):
    model_config = example({"client": "research"})

    client: str = Field(min_length=1, max_length=100, description="The client allowed to train or import models on the dataset.")


class GrantOut(BaseModel):
    id: uuid.UUID
    dataset_id: uuid.UUID
    client: str = Field(description="The client the grant allows.")
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
