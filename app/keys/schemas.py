from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from app.keys.service import MAX_GRACE_SECONDS, SCOPES, parse_scopes
from app.pii import find_identifier
from app.schemas import Page, StrictModel, example

Label = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:@-]*$")]


class KeyCreate(StrictModel):
    model_config = example({"name": "portal", "owner": "Ana Lima", "client": "acme", "scopes": ["requests:write", "requests:read"]})

    name: Label
    # The person who holds the key: shown with its name wherever the key acted.
    owner: Label | None = None
    # The client (tenant) the key acts for; defaults to the name, as on the command line.
    client: Label | None = None
    scopes: list[Literal[SCOPES]] = Field(min_length=1, max_length=len(SCOPES))  # type: ignore[valid-type]
    expires_at: AwareDatetime | None = None

    @field_validator("scopes")
    @classmethod
    def _sorted(cls, value: list[str]) -> list[str]:
        return parse_scopes(value)


class KeyRevoke(StrictModel):
    model_config = example({"reason": "The key was pasted into a ticket."})

    reason: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("reason")
    @classmethod
    def _names_nobody(cls, value: str | None) -> str | None:
        # Stored in the key's audit chain, like a request's review reasons.
        if find_identifier(value):
            raise ValueError("reason must not contain personal identifiers (an e-mail address or phone number)")
        return value


class KeyRotate(StrictModel):
    model_config = example({"grace_seconds": 3600})

    # Seconds the old key keeps working beside its successor, to roll the new one out.
    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = 0
    expires_at: AwareDatetime | None = None


class KeyOut(BaseModel):
    id: uuid.UUID
    client: str
    name: str
    owner: str | None
    prefix: str
    scopes: list[str]
    state: Literal["active", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: uuid.UUID | None


class KeyCreated(KeyOut):
    # The bearer secret, in this answer only. A replay of the same Idempotency-Key answers null:
    # only the key's hash is ever stored.
    key: str | None


class KeyRotated(BaseModel):
    successor: KeyCreated
    previous: KeyOut


class KeyPage(Page):
    items: list[KeyOut]
