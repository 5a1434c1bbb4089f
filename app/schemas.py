"""Shared schema pieces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (DESIGN §5)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Page(BaseModel):
    next_cursor: str | None = None
