from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from app.pseudonym import KIND_PATTERN, MAX_IDENTIFIER_LENGTH, IdentifierError, normalise_identifier
from app.schemas import StrictModel, example

Jurisdiction = Literal["gdpr", "ccpa"]
Source = Literal["portal", "admin", "batch"]
Status = Literal[
    "received", "approved", "on_hold", "denied", "cancelled",
    "scheduled", "processing", "verifying", "completed", "failed",
]
MAX_IDENTIFIERS = 10


class Subject(StrictModel):
    # kind → value, e.g. {"email": "...", "user_id": "..."}. Typed loosely on purpose and checked
    # by hand below, so that no validation message or location ever carries a value.
    identifiers: dict[str, Any] = Field(
        description="Identifier kind → value (email, user_id, phone, ...). Never stored or echoed.",
        json_schema_extra={
            "minProperties": 1, "maxProperties": MAX_IDENTIFIERS,
            "propertyNames": {"pattern": KIND_PATTERN.pattern},
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_IDENTIFIER_LENGTH},
        },
    )

    @field_validator("identifiers")
    @classmethod
    def _check(cls, value: dict[str, Any]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one identifier is required")
        if len(value) > MAX_IDENTIFIERS:
            raise ValueError(f"at most {MAX_IDENTIFIERS} identifiers")
        for kind, raw in value.items():
            if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
                raise ValueError("identifier kinds are lower-case words (letters, digits, underscore)")
            if not isinstance(raw, str):
                raise ValueError(f"identifier '{kind}' must be a string")
            try:
                normalise_identifier(kind, raw)
            except IdentifierError as exc:
                raise ValueError(str(exc)) from None
        return value


class ErasureRequestCreate(StrictModel):
    model_config = example({
        "subject": {"identifiers": {"email": "jane@example.org"}}, "jurisdiction": "gdpr", "source": "portal",
        "external_id": "ticket-1234",
    })

    subject: Subject
    jurisdiction: Jurisdiction
    source: Source
    external_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    identity_verified: bool = False
    reason: str | None = Field(default=None, max_length=2000)
    callback_url: AnyHttpUrl | None = Field(default=None)

    @field_validator("callback_url")
    @classmethod
    def _url_length(cls, value):
        if value is not None and len(str(value)) > 2000:
            raise ValueError("callback_url is longer than 2000 characters")
        return value


class ReasonBody(StrictModel):
    model_config = example({"reason": "The requester's identity could not be verified."})

    reason: str = Field(min_length=1, max_length=2000)


class OptionalReasonBody(StrictModel):
    model_config = example({"reason": "Identity checked by the privacy team."})

    reason: str | None = Field(default=None, max_length=2000)


class ExtendBody(StrictModel):
    model_config = example({"days": 30, "reason": "The data sits in three systems; the request is complex."})

    reason: str = Field(min_length=1, max_length=2000)
    days: int = Field(ge=1, le=60)


class ErasureRequestOut(BaseModel):
    id: uuid.UUID
    status: Status
    jurisdiction: Jurisdiction
    source: Source
    external_id: str | None
    identity_verified: bool
    received_at: datetime
    due_at: datetime
    days_left: int
    extended_days: int | None
    reason: str | None
    status_reason: str | None
    decided_at: datetime | None
    completed_at: datetime | None
    outcome: str | None
    progress: dict[str, Any] | None
    updated_at: datetime


class ErasureRequestPage(BaseModel):
    items: list[ErasureRequestOut]
    next_cursor: str | None


class BatchItemResult(BaseModel):
    index: int
    # created | existing | error
    result: Literal["created", "existing", "error"]
    status: int
    request: ErasureRequestOut | None = None
    problem: dict[str, Any] | None = None


class BatchResponse(BaseModel):
    items: list[BatchItemResult]
    created: int
    existing: int
    errors: int


class AuditEventOut(BaseModel):
    seq: int
    type: str
    at: datetime
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditTrail(BaseModel):
    request_id: uuid.UUID
    events: list[AuditEventOut]
    chain_valid: bool
    head: str
    problem: str | None = None
