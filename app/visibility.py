"""What a caller may see of the tenants' rows: its own client's, or every client's for an admin.
Another client's row answers 404, as if it did not exist, so ids never confirm another tenant's
data."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import NotFound
from app.principal import Principal

T = TypeVar("T")


def visible_one(session: Session, principal: Principal, query: Select[T],
                client: InstrumentedAttribute[str], missing: str) -> T:
    """The one row of `query` the caller may see; NotFound(`missing`) where there is none."""
    if not principal.is_admin:
        query = query.where(client == principal.client)
    row = session.scalar(query)
    if row is None:
        raise NotFound(missing)
    return row
