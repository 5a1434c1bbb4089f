from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.requests.schemas import _free_text_names_nobody
from app.schemas import Page, StrictModel, example

Kind = Literal["bias", "poisoning", "licence", "quality"]
MAX_RECORD_IDS = 1_000_000


class Trigger(StrictModel):
    features: dict[str, float] = Field(min_length=1, max_length=1000, description=(
        "Feature name → the value the trigger sets; applied to held-out rows to measure the attack success rate."))
    target_label: Any = Field(description="The class the trigger steers predictions to (a value of the dataset's classes).")


class _RemediationFields(StrictModel):
    """What every remediation request says besides how its slice is selected."""

    kind: Kind = Field(description="Why the slice must go: bias, poisoning, licence (withdrawn) or quality.")
    reason: str = Field(min_length=1, max_length=2000, description="Free text; refused when it holds an e-mail address or phone number.")
    dataset_id: uuid.UUID = Field(description="The dataset the slice is removed from.")
    model_ids: list[uuid.UUID] | None = Field(default=None, max_length=100, description=(
        "The models of that dataset to update; default: every model trained on it."))
    trigger: Trigger | None = Field(default=None, description="Poisoning only: the backdoor to measure.")
    group_column: str | None = Field(default=None, max_length=200, description=(
        "Bias only: the metadata column whose per-group accuracy and positive rate are compared."))
    positive_label: Any = Field(default=None, description="Bias only: the class counted as the positive outcome (default: the last class).")
    override_fraction: bool = Field(default=False, description=(
        "Allow a slice larger than OBLIVIATE_MAX_REMEDIATION_FRACTION of the dataset."))

    _check = field_validator("reason")(_free_text_names_nobody)

    @model_validator(mode="after")
    def _kind_fields(self) -> "_RemediationFields":
        if self.trigger is not None and self.kind != "poisoning":
            raise ValueError("a trigger applies to poisoning requests only")
        if (self.group_column is not None or self.positive_label is not None) and self.kind != "bias":
            raise ValueError("group_column and positive_label apply to bias requests only")
        return self


class RemediationCreate(_RemediationFields):
    model_config = example({
        "kind": "poisoning", "reason": "Source 'vendor-b' planted a backdoor trigger.",
        "dataset_id": "0b7f0d9e-0000-4000-8000-000000000000", "predicate": 'source == "vendor-b"',
        "trigger": {"features": {"f0": 16.0, "f1": 16.0}, "target_label": 7},
    })

    predicate: str | None = Field(default=None, max_length=4000, description=(
        "Select records by a predicate over the features, the label, record_id and the metadata columns."))
    record_ids: list[int] | None = Field(default=None, max_length=MAX_RECORD_IDS, description=(
        "Select records by id, as a JSON list (ids the dataset does not hold match nothing). A file of "
        "record ids goes to POST /v1/remediation-requests/upload."))
    source: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "Select every record whose declared source column holds this value."))

    @model_validator(mode="after")
    def _one_selection(self) -> "RemediationCreate":
        given = [name for name in ("predicate", "record_ids", "source") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of predicate, record_ids or source")
        return self


class RemediationFromFile(_RemediationFields):
    """The `metadata` field of POST /v1/remediation-requests/upload: a request whose slice is
    the records of the file part `record_ids`."""

    model_config = example({
        "kind": "licence", "reason": "Vendor C withdrew the licence of these records.",
        "dataset_id": "0b7f0d9e-0000-4000-8000-000000000000",
    })


class RemediationOut(BaseModel):
    id: uuid.UUID
    client: str
    kind: str
    reason: str
    status: str
    dataset_id: uuid.UUID
    model_ids: list[str]
    selection: dict[str, Any]
    predicate: str | None
    trigger: dict[str, Any] | None
    group_column: str | None
    override_fraction: bool
    dry_run: dict[str, Any] = Field(description="Records and subjects matched per dataset version, models affected, "
                                                "the method each would use and the estimated cost.")
    result: dict[str, Any] | None
    job_id: uuid.UUID | None
    created_by: str
    approved_by: str | None
    created_at: datetime
    updated_at: datetime


class RemediationPage(Page):
    items: list[RemediationOut]


class DenyRemediation(StrictModel):
    model_config = example({"reason": "The slice is not the poisoned source."})

    reason: str = Field(min_length=1, max_length=2000)

    _check = field_validator("reason")(_free_text_names_nobody)
