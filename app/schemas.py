"""Shared schema pieces."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


# A client named in a query string: no control characters (a NUL cannot even reach PostgreSQL).
CLIENT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (DESIGN §5), and so is text with a NUL
    character, which PostgreSQL cannot store in a text column (it would fail the insert)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


def example(value: Any) -> ConfigDict:
    """`model_config = example({...})` on a request body: the example shown in /docs and by
    client generators (tests/system/test_openapi.py checks that each validates)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class Page(BaseModel):
    next_cursor: str | None = None
