"""The admin API of API keys: list, create, revoke and rotate (scope `admin`). Admins act for
every client, so the listing shows every client's keys, each labelled with its client."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.deps import SessionDep, scoped
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.keys import service
from app.keys.models import ApiKey
from app.keys.schemas import KeyCreate, KeyCreated, KeyOut, KeyPage, KeyRevoke, KeyRotate, KeyRotated
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute
from app.schemas import CLIENT_PATTERN

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=UnitOfWorkRoute)
Admin = scoped("admin")
# Rotating a key that is no longer active answers 409; the shared machinery adds the rest.
NOT_ACTIVE = problem_responses(409)


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id, client=key.client, name=key.name, owner=key.owner, prefix=key.prefix, scopes=key.scopes.split(),
        state=service.state_of(key), created_at=key.created_at, expires_at=key.expires_at,
        revoked_at=key.revoked_at, rotated_from=key.rotated_from,
    )


def created_out(key: ApiKey, plaintext: str) -> dict[str, Any]:
    return KeyCreated(**key_out(key).model_dump(), key=plaintext).model_dump(mode="json")


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "key": None}


@router.get(
    "", response_model=KeyPage, operation_id="list_api_keys", summary="List API keys of every client",
    responses=problem_responses(400),  # a cursor that is not one of ours
)
def list_keys(
    session: SessionDep, _admin: Admin,
    client: Annotated[str | None, Query(max_length=100, pattern=CLIENT_PATTERN)] = None,
    state: Annotated[str | None, Query(pattern="^(active|revoked|expired)$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    rows, next_cursor = service.list_keys(session, client=client, state=state, limit=limit, cursor=cursor)
    return KeyPage(items=[key_out(k) for k in rows], next_cursor=next_cursor)


@router.post(
    "", status_code=201, response_model=KeyCreated, operation_id="create_api_key", summary="Create an API key",
    dependencies=[IdempotencyKeyHeader],
)
def create_key(body: KeyCreate, request: Request, session: SessionDep, admin: Admin) -> Any:
    """Create a key and answer its secret once. With an Idempotency-Key, a replay answers the
    same key with `key: null`: the secret is never stored."""
    def handler():
        key, plaintext = service.create_key(
            session, body.name, body.scopes, body.client, expires_at=body.expires_at, actor=admin.actor, owner=body.owner,
        )
        return 201, created_out(key, plaintext), {"Location": f"/v1/keys/{key.id}"}

    return idempotency.run(
        request, session, admin, "create-key", body.model_dump(mode="json"), handler, replayed=_without_secret,
    )


@router.get("/{key_id}", response_model=KeyOut, operation_id="get_api_key", summary="Get an API key")
def get_key(key_id: uuid.UUID, session: SessionDep, _admin: Admin) -> Any:
    return key_out(service.get_key(session, key_id))


@router.post("/{key_id}/revoke", response_model=KeyOut, operation_id="revoke_api_key", summary="Revoke an API key")
def revoke_key(key_id: uuid.UUID, session: SessionDep, admin: Admin, body: KeyRevoke | None = None) -> Any:
    """Revoke now; every API process refuses the key within principal_cache_seconds. Revoking
    a revoked key answers it unchanged."""
    reason = body.reason if body is not None else None
    return key_out(service.revoke_key(session, key_id, actor=admin.actor, reason=reason))


@router.post(
    "/{key_id}/rotate", status_code=201, response_model=KeyRotated, operation_id="rotate_api_key",
    summary="Rotate an API key", responses=NOT_ACTIVE, dependencies=[IdempotencyKeyHeader],
)
def rotate_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, admin: Admin, body: KeyRotate | None = None,
) -> Any:
    """A successor key (same client, name and scopes; its secret answered once) and the old key
    revoked, or expiring after `grace_seconds`."""
    body = body or KeyRotate()

    def handler():
        new, plaintext, old = service.rotate_key(
            session, key_id, actor=admin.actor, grace_seconds=body.grace_seconds, expires_at=body.expires_at,
        )
        answer = {"successor": created_out(new, plaintext), "previous": key_out(old).model_dump(mode="json")}
        return 201, answer, {"Location": f"/v1/keys/{new.id}"}

    def replayed(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "successor": _without_secret(answer["successor"])}

    payload = {"key_id": str(key_id), **body.model_dump(mode="json")}
    return idempotency.run(request, session, admin, "rotate-key", payload, handler, replayed=replayed)
