from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Form, Query, Request

from app.config import get_settings
from app.datasets import grants, identifiers, service
from app.datasets.models import Dataset, DatasetGrant, DatasetVersion
from app.datasets.schemas import (
    DatasetDetail,
    DatasetOut,
    DatasetPage,
    DatasetUpload,
    DatasetVersionCreated,
    DatasetVersionOut,
    GrantCreate,
    GrantOut,
    ModelRef,
)
from app.deps import SessionDep, any_scope, scoped
from app.errors import PayloadTooLarge
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.lineage.service import models_trained_on
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=UnitOfWorkRoute)

Writer = scoped("models:write")
# Whoever may upload datasets may also read them back.
Reader = any_scope("models:read", "models:write")
CHUNK = 1024 * 1024


@router.post(
    "", status_code=201, response_model=DatasetVersionCreated, operation_id="upload_dataset",
    summary="Upload a dataset version", dependencies=[IdempotencyKeyHeader],
    responses=problem_responses(409),  # the file does not fit the dataset's existing columns
)
def upload_dataset(form: Annotated[DatasetUpload, Form(media_type="multipart/form-data")], request: Request,
                   session: SessionDep, principal: Writer) -> Any:
    """Register a Parquet or CSV file as a dataset version. Subject identifiers are replaced by
    their pseudonymous keys before anything is stored. With `text_column` instead of
    `label_column` the file (CSV, Parquet or JSON Lines) is a text dataset of per-subject texts,
    stored as uploaded, for language models. With `image_column` the file is an image dataset
    (docs/image-models.md): Parquet with a column of PNG or JPEG bytes, or a zip of images with a
    manifest.csv; the images are stored re-encoded without their metadata."""
    upload_path, file_sha256 = _spool(form.file.file, get_settings().max_upload_bytes)
    try:
        features = form.feature_list()
        identifier_columns = identifiers.parse(form.identifier_columns)
        payload = {
            "name": form.name, "subject_column": form.subject_column, "subject_kind": form.subject_kind,
            "label_column": form.label_column, "text_column": form.text_column, "feature_columns": features,
            # Only when given, so a key stored before image datasets existed still matches.
            **({"image_column": form.image_column} if form.image_column is not None else {}),
            "file_sha256": file_sha256,
            # Only when given, so a key stored before identifier columns existed still matches.
            **({"identifier_columns": identifier_columns} if identifier_columns else {}),
        }

        def handler():
            version = service.create_dataset(
                session, principal, form.name, form.subject_column, form.subject_kind, form.label_column,
                features, upload_path, text_column=form.text_column, identifier_columns=identifier_columns,
                image_column=form.image_column,
            )
            dataset = session.get(Dataset, version.dataset_id)
            body = created_out(dataset, version).model_dump(mode="json")
            return 201, body, {"Location": f"/v1/datasets/{dataset.id}"}

        return idempotency.run(request, session, principal, "create-dataset", payload, handler)
    finally:
        upload_path.unlink(missing_ok=True)


def _spool(source: BinaryIO, limit: int) -> tuple[Path, str]:
    """Copy the upload under data_dir/tmp, hashing and counting; over `limit` bytes → 413.
    The body limit of the middleware counts the whole multipart body; this counts the file."""
    path = service.work_dir() / f"upload-{uuid.uuid4().hex}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as target:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The file is larger than {limit} bytes.")
                digest.update(chunk)
                target.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest()


@router.get("", response_model=DatasetPage, operation_id="list_datasets", summary="List datasets",
            responses=problem_responses(400))
def list_datasets(
    session: SessionDep, principal: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    rows, next_cursor = service.list_datasets(session, principal, limit=limit, cursor=cursor)
    return DatasetPage(items=[dataset_out(d) for d in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetDetail, operation_id="get_dataset", summary="Get a dataset")
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, principal: Reader) -> Any:
    """A dataset (by its id, or the id of one of its versions) with every version and the model
    versions trained on each."""
    dataset = service.get_dataset_for(session, principal, dataset_id)
    versions = service.versions_of(session, dataset)
    trained: dict[uuid.UUID, list[ModelRef]] = {}
    for row in models_trained_on(session, [v.id for v in versions]):
        trained.setdefault(row["dataset_version_id"], []).append(ModelRef.model_validate(row))
    return DatasetDetail(
        **dataset_out(dataset).model_dump(),
        versions=[version_out(dataset, v, trained.get(v.id, [])) for v in versions],
    )


@router.post("/{dataset_id}/grants", status_code=201, response_model=GrantOut, operation_id="create_dataset_grant",
             summary="Let another client use a dataset", dependencies=[IdempotencyKeyHeader],
             responses=problem_responses(404, 409))
def create_grant(dataset_id: uuid.UUID, body: GrantCreate, request: Request, session: SessionDep, principal: Writer) -> Any:
    """Allow another client to train or import models on this dataset (audited). Only the
    dataset's own client grants; without a grant no other client reaches it, admin keys included."""

    def handler():
        return 201, grant_out(grants.create(session, principal, dataset_id, body.client)).model_dump(mode="json"), {}

    return idempotency.run(request, session, principal, "create-dataset-grant",
                           {"dataset_id": str(dataset_id), **body.model_dump()}, handler)


@router.get("/{dataset_id}/grants", response_model=list[GrantOut], operation_id="list_dataset_grants",
            summary="List a dataset's grants", responses=problem_responses(404))
def list_grants(dataset_id: uuid.UUID, session: SessionDep, principal: Writer) -> Any:
    return [grant_out(g) for g in grants.list_for(session, principal, dataset_id)]


@router.delete("/{dataset_id}/grants/{grant_id}", response_model=GrantOut, operation_id="revoke_dataset_grant",
               summary="Revoke a dataset grant", responses=problem_responses(404))
def revoke_grant(dataset_id: uuid.UUID, grant_id: uuid.UUID, session: SessionDep, principal: Writer) -> Any:
    """Revoke the grant (audited): from now on the client can no longer train or import models on
    the dataset. Models it trained before are not touched by the revocation."""
    return grant_out(grants.revoke(session, principal, dataset_id, grant_id))


def grant_out(grant: DatasetGrant) -> GrantOut:
    return GrantOut(id=grant.id, dataset_id=grant.dataset_id, client=grant.grantee_client, created_at=grant.created_at,
                    created_by=grant.created_by, revoked_at=grant.revoked_at)


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        id=dataset.id, name=dataset.name, subject_kind=dataset.subject_kind, label_column=dataset.label_column or None,
        text_column=dataset.text_column, image_column=dataset.image_column, image_size=dataset.image_size,
        columns=dataset.feature_columns, classes=dataset.classes, current_version=dataset.current_version,
        created_at=dataset.created_at,
    )


def version_out(dataset: Dataset, version: DatasetVersion, models: list[ModelRef]) -> DatasetVersionOut:
    return DatasetVersionOut(
        id=version.id, version=version.version, rows=version.rows, subjects=version.subjects, sha256=version.sha256,
        created_at=version.created_at,
        current=version.version == dataset.current_version and version.destroyed_at is None,
        destroyed=version.destroyed_at is not None, destroyed_at=version.destroyed_at,
        parent_version_id=version.parent_version_id, origin=version.origin, models=models,
    )


def created_out(dataset: Dataset, version: DatasetVersion) -> DatasetVersionCreated:
    return DatasetVersionCreated(
        id=version.id, dataset_id=dataset.id, name=dataset.name, version=version.version, rows=version.rows,
        subjects=version.subjects, columns=dataset.feature_columns, label_column=dataset.label_column or None,
        text_column=dataset.text_column, image_column=dataset.image_column, image_size=dataset.image_size,
        subject_kind=dataset.subject_kind, sha256=version.sha256, classes=dataset.classes,
        filtered_rows=int(version.origin.get("filtered_rows", 0)), created_at=version.created_at,
    )
