"""Remediation requests (docs/remediation.md): a slice of a dataset chosen by what the records
are, shown as a dry run when created, approved by a second key (four eyes), then carried out
by a `remediation` job (app/remediation/execution.py). Every change of status is an event on
the request's own audit chain, `remediation:<id>`, in the same transaction. Flushes only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.store import get_store
from app.audit import service as audit_service
from app.certificates import remediation as certificates
from app.config import get_settings
from app.datasets import ingest, predicate
from app.datasets import service as dataset_service
from app.datasets.models import Dataset, DatasetVersion
from app.db import utcnow
from app.errors import Forbidden, InvalidTransition, NotFound, Unprocessable
from app.jobs import service as job_service
from app.keys.service import Principal
from app.models.models import Model
from app.pagination import newest_first_page
from app.remediation.id_file import IdFile
from app.remediation.models import RemediationRequest
from app.remediation.schemas import RemediationCreate, RemediationFromFile, RemediationOut
from app.unlearning import method_choice
from app.visibility import visible_one

stream = certificates.stream


@dataclass(frozen=True)
class Selection:
    """How the slice is chosen, compiled against one dataset version's columns."""

    by: str  # predicate | record_ids | source
    predicate: str | None
    record_ids: tuple[int, ...] = ()

    def columns(self) -> set[str]:
        return predicate.columns_of(predicate.parse(self.predicate)) if self.predicate else set()

    def mask(self, table: pa.Table, dataset: Dataset) -> np.ndarray:
        if self.by == "record_ids":
            value_set = pa.array(sorted(set(self.record_ids)), pa.int64())
            return np.asarray(pc.is_in(table.column("record_id"), value_set=value_set).to_numpy(zero_copy_only=False),
                              dtype=bool)
        schema = schema_for(table.schema, dataset)
        node = predicate.compile_predicate(self.predicate or "", schema)
        return np.asarray(predicate.evaluate(node, table, schema).to_numpy(zero_copy_only=False), dtype=bool)


def schema_for(arrow: pa.Schema, dataset: Dataset) -> predicate.Schema:
    return predicate.schema_of(arrow, metadata=dataset.metadata_columns or [], features=dataset.feature_columns,
                               label=dataset.label_column, classes=dataset.classes)


def selection_of(request: RemediationRequest) -> Selection:
    return Selection(request.selection["by"], request.predicate, tuple(request.selection.get("record_ids") or ()))


def read_table(version: DatasetVersion, columns: set[str] | None = None) -> pa.Table:
    """A version's table: the columns a selection needs (None: every column)."""
    # The label is stored as `label` whatever the dataset calls it; other names are columns.
    wanted = None if columns is None else sorted(
        {"record_id", "subject_key", "label", *columns} & set(_stored_schema(version).names))
    return ingest.read_version_table(get_store(), version.sha256, wanted)


def audit_group_reads(session: Session, request_id: uuid.UUID, dataset: Dataset, columns: set[str], actor: str,
                      purpose: str) -> None:
    """Group columns may be special-category data (GDPR Art. 9): every read is an event."""
    read = sorted(columns & set(dataset.group_columns or []))
    if read:
        audit_service.append(session, stream(request_id), "dataset.group_columns_read", actor,
                             {"dataset_id": str(dataset.id), "columns": read, "purpose": purpose})


def _selection(payload: RemediationCreate, dataset: Dataset, table_schema: pa.Schema) -> Selection:
    if payload.source is not None:
        if dataset.source_column is None:
            raise Unprocessable("The dataset declares no source column; select by predicate or record ids.")
        node = predicate.Comparison(dataset.source_column, "==", (payload.source,))
        text = predicate.render(node)
        predicate.parse(text)  # the same checks as a predicate (no personal identifiers)
        return Selection("source", text)
    if payload.record_ids is not None:
        if not payload.record_ids:
            raise Unprocessable("record_ids is empty.")
        return Selection("record_ids", None, tuple(sorted(set(payload.record_ids))))
    node = predicate.compile_predicate(payload.predicate or "", schema_for(table_schema, dataset))
    return Selection("predicate", predicate.render(node))


def _models(session: Session, dataset: Dataset, model_ids: list[uuid.UUID] | None) -> list[Model]:
    models = list(session.scalars(select(Model).where(Model.dataset_id == dataset.id, Model.client == dataset.client)
                                  .order_by(Model.name)))
    if model_ids is not None:
        wanted = set(model_ids)
        chosen = [m for m in models if m.id in wanted]
        if len(chosen) != len(wanted):
            raise Unprocessable("A model of model_ids is not a model of this dataset.")
        models = chosen
    return [m for m in models if m.current_version is not None]


def dry_run(session: Session, dataset: Dataset, selection: Selection, models: list[Model],
            kind: str) -> dict[str, Any]:
    """What the request would do: matched records and subjects per live dataset version, the
    models affected with the method each would use, and an estimated cost in records trained."""
    columns = selection.columns()
    versions = []
    current: dict[str, int] = {}
    for version in dataset_service.versions_of(session, dataset):
        if version.destroyed_at is not None:
            continue
        table = read_table(version, columns)
        mask = selection.mask(table, dataset)
        matched = int(mask.sum())
        subjects = len(set(pc.filter(table.column("subject_key"), pa.array(mask)).to_pylist())) if matched else 0
        entry = {"version": version.version, "rows": version.rows, "records": matched, "subjects": subjects,
                 "fraction": round(matched / max(version.rows, 1), 6)}
        versions.append(entry)
        if version.version == dataset.current_version:
            current = entry
    model_entries = []
    comparison = kind in ("poisoning", "bias")
    for model in models:
        from app.models import service as model_service

        model_version = model_service.current_version(session, model)
        trained_on = dataset_service.get_version(session, model_version.dataset_version_id)
        method = method_choice.choose_method(model, trained_on.rows)
        remaining = max(trained_on.rows - current.get("records", 0), 0)
        shards = (model.sisa or {}).get("shards", 1)
        if method == "retrain":
            trained = remaining
        elif method == "sisa":
            trained = min(remaining, remaining * min(current.get("records", 0), shards) // max(shards, 1))
        else:
            trained = current.get("records", 0) + min(remaining, 20_000)
        model_entries.append({
            "model": model.name, "model_id": str(model.id), "version": model_version.version,
            "dataset_version": trained_on.version, "method": method,
            "estimated_cost": {"records_trained": int(trained + (remaining if comparison and method != "retrain" else 0)),
                               "comparison_retrain": comparison and method != "retrain"},
        })
    return {"dataset": {"id": str(dataset.id), "name": dataset.name, "current_version": dataset.current_version},
            "versions": versions, "records": current.get("records", 0), "subjects": current.get("subjects", 0),
            "rows": current.get("rows", 0), "fraction": current.get("fraction", 0.0), "models": model_entries,
            "max_fraction": get_settings().max_remediation_fraction}


def _known_ids(version: DatasetVersion, id_file: IdFile) -> Selection:
    """A file of record ids selects records of the current version, every one of them: an id the
    version does not hold is refused (how many, and the first one's line), not silently skipped."""
    held = np.asarray(read_table(version, set()).column("record_id").to_numpy(), dtype=np.int64)
    unknown = ~np.isin(id_file.ids, held)
    if unknown.any():
        count = int(unknown.sum())
        line = int(id_file.lines[np.flatnonzero(unknown)[0]])
        raise Unprocessable(
            f"{count} of the file's {len(id_file.ids)} record ids are not records of the dataset's current version "
            f"(version {version.version}); the first is on line {line}.", unknown=count, ids=int(len(id_file.ids)),
            line=line)
    return Selection("record_ids", None, tuple(sorted(id_file.ids.tolist())))


def create(session: Session, principal: Principal, payload: RemediationCreate | RemediationFromFile,
           id_file: IdFile | None = None) -> RemediationRequest:
    """A request in `pending_approval` with its dry run, selected by `payload` or, from the upload
    route, by the records of `id_file` (then `payload` carries no selection)."""
    dataset = dataset_service.get_dataset_for(session, principal, payload.dataset_id)
    if dataset.is_text:
        raise Unprocessable("Remediation requests select rows of tabular datasets; this dataset is text.")
    current = dataset_service.current_version(session, dataset)
    arrow_schema = _stored_schema(current)
    if id_file is not None:
        selection = _known_ids(current, id_file)
    elif isinstance(payload, RemediationCreate):
        selection = _selection(payload, dataset, arrow_schema)
    else:
        raise Unprocessable("A remediation request from a file needs its file of record ids.")
    trigger = _trigger(payload, dataset)
    group_column = payload.group_column
    if group_column is not None and group_column not in (dataset.metadata_columns or []):
        raise Unprocessable("group_column must be one of the dataset's metadata columns.")
    if payload.positive_label is not None and payload.positive_label not in dataset.classes:
        raise Unprocessable("positive_label is not one of the dataset's classes.")
    models = _models(session, dataset, payload.model_ids)
    figures = dry_run(session, dataset, selection, models, payload.kind)
    if figures["records"] == 0:
        raise Unprocessable("The selection matches no record of the dataset's current version.", figures=figures)
    if figures["fraction"] > get_settings().max_remediation_fraction and not payload.override_fraction:
        raise Unprocessable(
            f"The selection matches {figures['records']} of {figures['rows']} records ({figures['fraction']:.1%}), more "
            f"than OBLIVIATE_MAX_REMEDIATION_FRACTION ({get_settings().max_remediation_fraction:.1%}); set "
            "override_fraction to go ahead.", figures=figures)
    if figures["records"] >= figures["rows"]:
        raise Unprocessable("The selection matches every record of the dataset.", figures=figures)
    now = utcnow()
    selection_json: dict[str, Any] = {"by": selection.by}
    if selection.by == "record_ids":
        selection_json["record_ids"] = list(selection.record_ids)
    if id_file is not None:
        selection_json["file"] = id_file.summary()
    request = RemediationRequest(
        id=uuid.uuid4(), client=dataset.client, kind=payload.kind, reason=payload.reason, status="pending_approval",
        dataset_id=dataset.id, model_ids=[str(m.id) for m in models], selection=selection_json,
        predicate=selection.predicate, trigger=trigger, group_column=group_column,
        override_fraction=payload.override_fraction, dry_run=figures, result=None, job_id=None,
        created_by=principal.actor, approved_by=None, created_at=now, updated_at=now,
    )
    if payload.positive_label is not None:
        request.selection = {**selection_json, "positive_label": payload.positive_label}
    session.add(request)
    session.flush()
    audit_group_reads(session, request.id, dataset, selection.columns() | ({group_column} if group_column else set()),
                      principal.actor, "dry_run")
    audit_service.append(session, stream(request.id), "remediation.created", principal.actor, {
        "kind": payload.kind, "reason": payload.reason, "selection": selection.by, "predicate": selection.predicate,
        "records": figures["records"], "subjects": figures["subjects"], "fraction": figures["fraction"],
        "models": [m["model"] for m in figures["models"]], "override_fraction": payload.override_fraction,
        **({"file": id_file.summary()} if id_file is not None else {})})
    return request


def _stored_schema(version: DatasetVersion) -> pa.Schema:
    import pyarrow.parquet as pq

    with get_store().open_verified(version.sha256) as handle:
        return pq.read_schema(handle)


def _trigger(payload: RemediationCreate, dataset: Dataset) -> dict[str, Any] | None:
    if payload.trigger is None:
        return None
    unknown = [name for name in payload.trigger.features if name not in dataset.feature_columns]
    if unknown:
        raise Unprocessable("The trigger names a column that is not a feature of the dataset.")
    if payload.trigger.target_label not in dataset.classes:
        raise Unprocessable("The trigger's target_label is not one of the dataset's classes.")
    return {"features": dict(payload.trigger.features), "target_label": payload.trigger.target_label}


def get_for(session: Session, principal: Principal, request_id: uuid.UUID, *, lock: bool = False) -> RemediationRequest:
    query = select(RemediationRequest).where(RemediationRequest.id == request_id)
    if lock:
        query = query.with_for_update()
    return visible_one(session, principal, query, RemediationRequest.client, "No remediation request with this id.")


def list_for(session: Session, principal: Principal, *, limit: int, cursor: str | None,
             status: str | None = None) -> tuple[list[RemediationRequest], str | None]:
    query = select(RemediationRequest)
    if not principal.is_admin:
        query = query.where(RemediationRequest.client == principal.client)
    if status is not None:
        query = query.where(RemediationRequest.status == status)
    return newest_first_page(session, query, RemediationRequest.created_at, RemediationRequest.id, limit, cursor)


def audit(session: Session, request: RemediationRequest, type_: str, actor: str, data: dict[str, Any]) -> None:
    audit_service.append(session, stream(request.id), type_, actor, data)


def move(session: Session, request: RemediationRequest, to: str, actor: str, event: str, **data: Any) -> None:
    """Change the status and record it on the request's chain, in the same transaction."""
    before = request.status
    request.status = to
    request.updated_at = utcnow()
    audit_service.append(session, stream(request.id), event, actor, {"from": before, "to": to, **data})
    session.flush()


def approve(session: Session, principal: Principal, request_id: uuid.UUID) -> RemediationRequest:
    """Four eyes: a key other than the creator's approves; a `remediation` job carries it out."""
    request = get_for(session, principal, request_id, lock=True)
    if request.status != "pending_approval":
        raise InvalidTransition(f"Cannot approve a remediation request whose status is '{request.status}'.",
                                current_status=request.status, allowed_from=["pending_approval"])
    if principal.actor == request.created_by:
        raise Forbidden("A remediation request is approved by another key than the one that created it (four eyes).")
    request.approved_by = principal.actor
    job = job_service.create(session, client=request.client, kind="remediation", model_id=None,
                             payload={"remediation_id": str(request.id), "dataset_id": str(request.dataset_id)})
    request.job_id = job.id
    move(session, request, "approved", principal.actor, "remediation.approved", job_id=str(job.id))
    return request


def deny(session: Session, principal: Principal, request_id: uuid.UUID, reason: str) -> RemediationRequest:
    request = get_for(session, principal, request_id, lock=True)
    if request.status != "pending_approval":
        raise InvalidTransition(f"Cannot deny a remediation request whose status is '{request.status}'.",
                                current_status=request.status, allowed_from=["pending_approval"])
    move(session, request, "denied", principal.actor, "remediation.denied", reason=reason)
    return request


def trail(session: Session, request: RemediationRequest) -> list[dict[str, Any]]:
    return [{"seq": e.seq, "type": e.type, "actor": e.actor, "at": e.at, "data": e.data}
            for e in audit_service.events(session, stream(request.id))]


def to_out(request: RemediationRequest) -> RemediationOut:
    selection = dict(request.selection)
    if "record_ids" in selection:
        # The list can be long: the answer says how many; the dry run says what they matched.
        selection["record_ids"] = len(selection["record_ids"])
    return RemediationOut(
        id=request.id, client=request.client, kind=request.kind, reason=request.reason, status=request.status,
        dataset_id=request.dataset_id, model_ids=list(request.model_ids), selection=selection,
        predicate=request.predicate, trigger=request.trigger, group_column=request.group_column,
        override_fraction=request.override_fraction, dry_run=request.dry_run, result=request.result,
        job_id=request.job_id, created_by=request.created_by, approved_by=request.approved_by,
        created_at=request.created_at, updated_at=request.updated_at,
    )


def get_certificate(session: Session, principal: Principal, request_id: uuid.UUID) -> dict[str, Any]:
    request = get_for(session, principal, request_id)
    certificate = certificates.get(session, request.id)
    if certificate is None:
        raise NotFound("This remediation request has no certificate yet.")
    return certificates.signed_document(certificate)
