"""Imported Hugging Face base models (`model_bases`): storing a checked archive, listing, and
resolving the base an hf_causal_lm model names. Flushes only; the caller commits.

A base holds none of the client's data subjects and is never destroyed by an erasure; the
models fine-tuned from it are (docs/byo-language-model.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.artifacts.store import get_store
from app.audit import service as audit_service
from app.datasets.storage import stored_artifact
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.families.builtin import RESOLVED_BASE_FIELDS
from app.families.spec import FamilyParamsError, FamilySpec
from app.keys.service import Principal
from app.models.hf_archive import CheckedBase
from app.models.models import ModelBase
from app.models.schemas import BaseImportMetadata, BaseOut

# Names the models router reserves: GET /v1/models/bases would hide a model of this name.
RESERVED_MODEL_NAMES = ("bases",)


def import_base(session: Session, principal: Principal, meta: BaseImportMetadata, checked: CheckedBase,
                *, upload_sha256: str) -> ModelBase:
    """Store the normalised archive and record the base, audited with every hash."""
    if session.scalar(select(ModelBase).where(ModelBase.client == principal.client, ModelBase.name == meta.name)):
        raise Conflict(f"A base named '{meta.name}' already exists.")
    with stored_artifact(session, get_store(), checked.tar_path, checked.tar_sha256):
        base = ModelBase(
            id=uuid.uuid4(), client=principal.client, name=meta.name, architecture=checked.architecture.model_type,
            config=checked.architecture.to_json(), parameters=checked.parameters, archive_sha256=checked.tar_sha256,
            files=checked.files, created_at=utcnow(), created_by=principal.actor,
        )
        try:
            with session.begin_nested():
                session.add(base)
                session.flush()
        except IntegrityError:  # the same name, imported at the same moment
            raise Conflict(f"A base named '{meta.name}' is being imported by another request.") from None
        audit_service.append(session, f"model_base:{base.id}", "model_base.imported", principal.actor, {
            "client": base.client, "architecture": base.architecture, "parameters": base.parameters,
            "upload_sha256": upload_sha256, "archive_sha256": base.archive_sha256, "files": base.files,
        })
    return base


def list_for(session: Session, principal: Principal) -> list[ModelBase]:
    query = select(ModelBase).order_by(ModelBase.created_at.desc(), ModelBase.name)
    if not principal.is_admin:
        query = query.where(ModelBase.client == principal.client)
    return list(session.scalars(query.limit(500)))


def get_for(session: Session, principal: Principal, name: str) -> ModelBase:
    """The caller's base of this name (only its own client's: a model fine-tunes its client's base)."""
    base = session.scalar(select(ModelBase).where(ModelBase.client == principal.client, ModelBase.name == name))
    if base is None:
        raise NotFound("No base with this name.")
    return base


def to_out(base: ModelBase) -> BaseOut:
    return BaseOut(id=base.id, client=base.client, name=base.name, architecture=base.architecture,
                   parameters=base.parameters, archive_sha256=base.archive_sha256, files=base.files,
                   created_at=base.created_at)


def resolve(session: Session, principal: Principal, spec: FamilySpec, config: Any, given: dict[str, Any] | None) -> Any:
    """An hf_causal_lm model's params with its base filled in: the id, archive hash, model_type
    and architecture of the client's base it names, so workers need no table to find it."""
    if any(key in (given or {}) for key in RESOLVED_BASE_FIELDS):
        raise Unprocessable(f"params may not set {', '.join(RESOLVED_BASE_FIELDS)}: they come from the base.")
    if config.base is None:
        return config
    base = get_for(session, principal, config.base)
    resolved = {"base_id": str(base.id), "base_archive_sha256": base.archive_sha256,
                "architecture": base.architecture, "base_config": base.config}
    try:
        return spec.parse_params({**spec.dump_params(config), **resolved})
    except FamilyParamsError as exc:  # block_size or LoRA targets that this base's architecture does not have
        raise Unprocessable(f"Invalid params for this base: {exc}", errors=exc.errors) from None


def live_references(session: Session, shas: Sequence[str]) -> set[str]:
    """Which of these hashes a base's archive is: bases are never destroyed."""
    return set(session.scalars(select(ModelBase.archive_sha256).where(ModelBase.archive_sha256.in_(sorted(set(shas))))))
