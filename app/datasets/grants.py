"""Cross-client dataset grants: a dataset's own client lets another client train or import models
on it. Creating and revoking a grant are audited on the dataset's stream; an admin key gets no
access of its own to another client's data. Functions here only flush."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.datasets.models import Dataset, DatasetGrant
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.keys.service import Principal


def usable_by(session: Session, client: str, dataset: Dataset) -> bool:
    """Whether this client may train or import a model on the dataset."""
    if dataset.client == client:
        return True
    return session.scalar(select(DatasetGrant.id).where(
        DatasetGrant.dataset_id == dataset.id, DatasetGrant.grantee_client == client,
        DatasetGrant.revoked_at.is_(None)).limit(1)) is not None


def _own_dataset(session: Session, principal: Principal, dataset_id: uuid.UUID) -> Dataset:
    """Only the dataset's own client manages its grants; any other caller gets the missing 404."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.client != principal.client:
        raise NotFound("No dataset with this id.")
    return dataset


def create(session: Session, principal: Principal, dataset_id: uuid.UUID, grantee: str) -> DatasetGrant:
    dataset = _own_dataset(session, principal, dataset_id)
    if grantee == dataset.client:
        raise Unprocessable("A dataset's own client needs no grant.")
    if usable_by(session, grantee, dataset):
        raise Conflict("This client already holds a live grant on this dataset.")
    grant = DatasetGrant(id=uuid.uuid4(), dataset_id=dataset.id, grantee_client=grantee, created_at=utcnow(),
                         created_by=principal.actor)
    session.add(grant)
    session.flush()
    audit_service.append(session, f"dataset:{dataset.id}", "dataset.grant_created", principal.actor,
                         {"grant_id": str(grant.id), "grantee_client": grantee})
    return grant


def list_for(session: Session, principal: Principal, dataset_id: uuid.UUID) -> list[DatasetGrant]:
    dataset = _own_dataset(session, principal, dataset_id)
    return list(session.scalars(select(DatasetGrant).where(DatasetGrant.dataset_id == dataset.id)
                                .order_by(DatasetGrant.created_at)))


def revoke(session: Session, principal: Principal, dataset_id: uuid.UUID, grant_id: uuid.UUID) -> DatasetGrant:
    dataset = _own_dataset(session, principal, dataset_id)
    grant = session.get(DatasetGrant, grant_id)
    if grant is None or grant.dataset_id != dataset.id:
        raise NotFound("No grant with this id.")
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
        session.flush()
        audit_service.append(session, f"dataset:{dataset.id}", "dataset.grant_revoked", principal.actor,
                             {"grant_id": str(grant.id), "grantee_client": grant.grantee_client})
    return grant
