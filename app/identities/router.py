from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator

from app.deps import SessionDep, any_scope, scoped
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.identities import service
from app.identities.service import MAX_CLOSURE
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute
from app.schemas import StrictModel, check_identifier, example

router = APIRouter(prefix="/v1/identities", tags=["identities"], route_class=UnitOfWorkRoute)

Writer = scoped("requests:write")
Reader = any_scope("requests:read", "requests:write")


class LinkCreate(StrictModel):
    model_config = example({"identifiers": [
        {"kind": "email", "value": "jane@example.org"}, {"kind": "user_id", "value": "u-1042"}]})

    identifiers: list[dict[str, Any]] = Field(
        min_length=2, max_length=MAX_CLOSURE,
        description="Identifiers ({kind, value}) that denote one person; hashed at intake, never stored or echoed.",
    )

    @field_validator("identifiers")
    @classmethod
    def _check(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in value:
            if set(item) != {"kind", "value"}:
                raise ValueError("each identifier is an object with exactly 'kind' and 'value'")
            check_identifier(item["kind"], item["value"])
        return value

    def pairs(self) -> list[tuple[str, str]]:
        return [(item["kind"], item["value"]) for item in self.identifiers]


class LinkCreated(BaseModel):
    kinds: list[str] = Field(description="The kinds linked.")
    identifiers: int = Field(description="How many distinct identifiers were linked.")
    links_digest: str = Field(description="sha256 of the linked pseudonyms, as the audit event records it.")


class KnownKinds(BaseModel):
    known_kinds: list[str] = Field(description="Kinds requests, look-ups and links may name.")
    held_kinds: list[str] = Field(description="Kinds some dataset or link of this client holds.")


@router.post("/links", status_code=201, response_model=LinkCreated, operation_id="link_identities",
             summary="Declare that identifiers denote one person", dependencies=[IdempotencyKeyHeader],
             responses=problem_responses(422))
def link_identities(body: LinkCreate, request: Request, session: SessionDep, principal: Writer) -> Any:
    """Link identifiers of one person (a CRM's e-mail and internal id, say): a request by any of
    them then resolves to every subject key linked to it. Per client; audited by kinds and digest.
    At least one identifier must be of a known kind; the others' kinds become known."""

    def handler():
        return 201, service.declare_links(session, principal, body.pairs()), {}

    # The payload is only fingerprinted, with the secret key (it holds raw identifiers).
    return idempotency.run(request, session, principal, "link-identities", lambda: body.model_dump(mode="json"), handler)


@router.get("/kinds", response_model=KnownKinds, operation_id="identifier_kinds", summary="Identifier kinds")
def identifier_kinds(session: SessionDep, principal: Reader) -> Any:
    return KnownKinds(known_kinds=service.known_kinds(session, principal.client),
                      held_kinds=sorted(service.held_kinds(session, principal.client)))
