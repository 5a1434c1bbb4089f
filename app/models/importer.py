"""Registering a model trained elsewhere, so it can be unlearned later."""

from __future__ import annotations

import hashlib
import io
import re
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.artifacts.store import get_store
from app.datasets.ingest import read_version_table
from app.datasets.storage import tombstoned_keys
from app.db import utcnow
from app.errors import Conflict, Unprocessable
from app.families import budget
from app.keys.service import Principal
from app.lineage.manifest import HOLDOUT, Manifest
from app.models import service, weights as weight_checks
from app.models.models import Model
from app.models.schemas import ImportMetadata

_ID_TEXT = re.compile(rb"[0-9\s]*")
_LONG_ID = re.compile(rb"[0-9]{19,}")
INT64_MAX = 2**63 - 1


def parse_record_ids(data: bytes) -> np.ndarray:
    """Record ids from the `record_ids` file part: Parquet with an integer `record_id` column,
    or text with one decimal id per line. Problems never quote the file."""
    if data[:4] == b"PAR1":
        return _parquet_ids(data)
    if not _ID_TEXT.fullmatch(data):
        raise Unprocessable("The record_ids file is neither Parquet nor one decimal record id per line.")
    if any(len(m.group()) > 19 or int(m.group()) > INT64_MAX for m in _LONG_ID.finditer(data)):
        raise Unprocessable("A record id in the record_ids file is larger than 2^63 - 1.")
    digits = np.frombuffer(data, dtype=np.uint8)
    digits = (digits >= ord("0")) & (digits <= ord("9"))
    count = int(np.count_nonzero(digits[1:] & ~digits[:-1])) + int(digits[:1].sum())  # runs of digits
    if count == 0:
        raise Unprocessable("The record_ids file holds no record ids.")
    # numpy's C parser, not a Python object per id; the count guards its reading of the text.
    ids = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
    if len(ids) != count:
        raise Unprocessable("The record_ids file is neither Parquet nor one decimal record id per line.")
    return ids


def _parquet_ids(data: bytes) -> np.ndarray:
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        if "record_id" not in parquet.schema_arrow.names:
            raise Unprocessable("The record_ids Parquet file has no record_id column.")
        column = parquet.read(columns=["record_id"]).column("record_id")
    except (pa.ArrowException, OSError):
        raise Unprocessable("The record_ids file is not a readable Parquet file.") from None
    if not pa.types.is_integer(column.type):
        raise Unprocessable("The record_id column of the record_ids file must hold integers.")
    if column.null_count or len(column) == 0:
        raise Unprocessable("The record_id column of the record_ids file must hold at least one id and no nulls.")
    if pc.min(column).as_py() < 0 or pc.max(column).as_py() > INT64_MAX:
        raise Unprocessable("Record ids are between 0 and 2^63 - 1.")
    return column.to_numpy().astype(np.int64)


def _manifest_bytes(record_ids: np.ndarray, trained: np.ndarray, subject_keys: np.ndarray) -> bytes:
    trained_subjects = set(subject_keys[trained].tolist())
    untouched = np.array([key not in trained_subjects for key in subject_keys.tolist()], dtype=bool)
    keep = trained | untouched
    shards = np.where(trained, 0, HOLDOUT)[keep]
    slices = np.where(trained, 0, HOLDOUT)[keep]
    return Manifest(record_ids[keep], shards.astype(np.int64), slices.astype(np.int64)).to_parquet()


def check_weights(spec, config, shape: dict, weights: bytes) -> None:
    """Refuse files that are not safetensors, dtypes the family does not compute in, NaN or
    infinite values, and tensors the network does not have, from the file's header and bytes
    alone: the API never loads torch. A family that declares no shapes gets the other checks;
    weights that do not fit its network then fail when a worker first uses them."""
    shapes = spec.parameter_shapes(config, shape["n_features"], shape["n_classes"]) if spec.parameter_shapes else None
    try:
        weight_checks.check(weights, dtypes=spec.weight_dtypes, shapes=shapes)
    except weight_checks.WeightsError as exc:
        raise Unprocessable(str(exc)) from None


def check_imported_parameters(weights: bytes) -> None:
    """The parameter budget, from the safetensors header's shapes, before any tensor is read."""
    try:
        header = weight_checks.read_header(weights)
        shapes = {name: tuple(weight_checks.fields(info, position)[1])
                  for position, (name, info) in enumerate(sorted(header.items()), start=1)}
        budget.check_parameters(budget.parameter_count(shapes))
    except (weight_checks.WeightsError, budget.BudgetExceeded) as exc:
        raise Unprocessable(str(exc)) from None


def import_model(
    session: Session, principal: Principal, meta: ImportMetadata, weights: bytes, *, record_ids: np.ndarray | None = None,
) -> Model:
    """`record_ids` from the file part, or None to take them from the metadata (exactly one)."""
    if (record_ids is None) == (meta.record_ids is None):
        raise Unprocessable("Give the record ids either in the metadata or as the record_ids file part, not both or neither.")
    spec, config = service.validate_family(meta.family, meta.params, meta.unlearning_method)
    dataset, version = service.resolve_dataset_version(session, principal, meta.dataset_version_id)
    if session.scalar(select(Model).where(Model.client == principal.client, Model.name == meta.name)):
        raise Conflict(f"A model named '{meta.name}' already exists.")
    service.check_data_kind(spec, dataset)
    if dataset.is_image:
        service.check_image_fit(config, dataset)
    shape = service.network_shape(spec, config, dataset)
    check_imported_parameters(weights)
    # Unlearning retrains or fine-tunes the imported network: the training budgets apply too.
    service.check_budget(spec, config, shape, version.rows)
    check_weights(spec, config, shape, weights)
    store = get_store()
    table = read_version_table(store, version.sha256)
    ids_in_version = table.column("record_id").to_numpy().astype(np.int64)
    subject_keys = np.asarray(table.column("subject_key").to_pylist(), dtype=object)
    wanted = np.unique(record_ids if record_ids is not None else np.asarray(meta.record_ids, dtype=np.int64))
    trained = np.isin(ids_in_version, wanted)
    if int(trained.sum()) != len(wanted):
        raise Unprocessable(f"{len(wanted) - int(trained.sum())} record ids are not in dataset version {version.id}.")
    if tombstoned_keys(session, dataset.client, sorted(set(subject_keys[trained].tolist()))):
        raise Conflict("These weights were trained on records of a data subject who has been erased; they cannot be imported.")
    model = Model(
        id=uuid.uuid4(), client=principal.client, name=meta.name, family=spec.name, dataset_id=dataset.id,
        params=spec.dump_params(config), sisa=None, holdout_fraction=0.0, seed=meta.seed,
        unlearning_method=meta.unlearning_method, created_at=utcnow(),
    )
    session.add(model)
    session.flush()
    manifest = _manifest_bytes(ids_in_version, trained, subject_keys)
    # Held before the bytes are written: content addressing may share them with another client,
    # and no pending deletion of that content may run until this version is committed.
    artifact_service.hold(session, [hashlib.sha256(weights).hexdigest(), hashlib.sha256(manifest).hexdigest()])
    weights_sha = store.put_bytes(weights)
    manifest_sha = store.put_bytes(manifest)
    service.record_version(
        session, model_id=model.id, dataset_version_id=version.id, family=spec.name, params=spec.dump_params(config),
        seed=meta.seed, shape=shape, sisa=None, manifest_sha=manifest_sha,
        shards=[{"shard": 0, "weights": weights_sha, "checkpoints": []}], metrics={},
        origin={"kind": "import"}, actor=principal.actor,
    )
    return model
