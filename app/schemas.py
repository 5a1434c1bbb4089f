"""Shared schema pieces."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.pseudonym import KIND_PATTERN, MAX_IDENTIFIER_LENGTH, IdentifierError, validate_identifier

# A client named in a query string: no control characters (a NUL cannot even reach PostgreSQL).
CLIENT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (docs/architecture.md, "HTTP conventions"), and so is text with a NUL
    character, which PostgreSQL cannot store in a text column (it would fail the insert)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


MAX_IDENTIFIERS = 10


# The data subject of an erasure request, and of a lineage look-up (app/lineage/schemas.py).
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
            check_identifier(kind, raw)
        return value


def check_identifier(kind: Any, raw: Any) -> None:
    """One identifier's checks, as ValueError whose message names the kind, never the value."""
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise ValueError("identifier kinds are lower-case words (letters, digits, underscore)")
    if not isinstance(raw, str):
        raise ValueError(f"identifier '{kind}' must be a string")
    try:
        validate_identifier(kind, raw)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None


def example(value: Any) -> ConfigDict:
    """`model_config = example({...})` on a request body: the example shown in /docs and by
    client generators (tests/system/test_openapi.py checks that each validates)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class Page(BaseModel):
    next_cursor: str | None = None
