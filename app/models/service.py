"""Models and their versions. Flushes only; the caller commits (and so publishes the job)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Text, cast, func, or_, select, text
from sqlalchemy.orm import Session

from app.artifacts import service as artifact_service
from app.audit import service as audit_service
from app.config import get_settings
from app.datasets import grants as dataset_grants
from app.datasets.models import Dataset, DatasetVersion
from app.db import is_postgres, utcnow
from app.errors import Conflict, Gone, NotFound, TooManyRequests, Unprocessable
from app.families import budget
from app.families.registry import FamilyParamsError, UnknownFamilyError, families, get_family
from app.jobs import service as job_service
from app.jobs.models import Job
from app.keys.service import Principal
from app.models.models import Model, ModelReference, ModelVersion
from app.models.schemas import METHODS, TABULAR_METHODS, ModelCreate, ModelOut, ModelVersionOut


def resolve_dataset_version(session: Session, principal: Principal, any_id: uuid.UUID) -> tuple[Dataset, DatasetVersion]:
    """A dataset id (its current version) or a dataset version id, of the caller's client or
    granted to it (app/datasets/grants.py); an admin key has no access of its own to another
    client's data, and gets the same 404 as for a missing dataset."""
    version = session.get(DatasetVersion, any_id)
    dataset = session.get(Dataset, version.dataset_id) if version else session.get(Dataset, any_id)
    if dataset is None or not dataset_grants.usable_by(session, principal.client, dataset):
        raise NotFound("No dataset with this id.")
    if version is None:
        version = session.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.current_version)
        )
    if version is None or version.destroyed_at is not None:
        raise Gone("That dataset version was destroyed; train on the dataset's current version.")
    return dataset, version


def validate_family(family: str, params: dict | None, method: str | None):
    try:
        spec = get_family(family)
    except UnknownFamilyError:
        raise Unprocessable(f"Unknown model family '{family}'. Known: {', '.join(sorted(families()))}.") from None
    try:
        config = spec.parse_params(params)
    except FamilyParamsError as exc:
        raise Unprocessable(f"Invalid params for {family}: {exc}", errors=exc.errors) from None
    if method is not None:
        if method not in METHODS:
            raise Unprocessable(f"Unknown unlearning method '{method}'. Known: {', '.join(METHODS)}.")
        if method == "certified_newton" and not spec.convex:
            raise Unprocessable("certified_newton needs a convex family such as logistic_regression.")
        supported = spec.methods or TABULAR_METHODS
        if method not in supported:
            raise Unprocessable(f"The {spec.name} family does not support '{method}'; it supports {', '.join(supported)}.")
    return spec, config


def check_data_kind(spec, dataset: Dataset) -> None:
    """A text family trains on a text dataset, an image family on an image one, a tabular family
    on a tabular one."""
    kind = dataset.kind
    if spec.data_kind != kind:
        raise Unprocessable(f"The {spec.name} family trains on {spec.data_kind} datasets; this dataset is {kind}.")


def check_image_fit(config, dataset: Dataset) -> None:
    """An image family's network is built for one image size: the dataset's."""
    height, width, channels = dataset.image_size
    if (config.image_size, config.image_size, config.channels) != (height, width, channels):
        raise Unprocessable(
            f"The model's image_size {config.image_size} and channels {config.channels} do not fit the dataset's "
            f"images ({height}×{width}, {channels} channel(s)); set them to the dataset's."
        )
    if config.conditional and not dataset.classes:
        raise Unprocessable("A conditional image model needs a dataset with a label column.")


def network_shape(spec, config, dataset: Dataset) -> dict[str, int]:
    """The shape stored with a model version (workers.engine.families.base.Shape)."""
    if dataset.is_image:
        height, width, channels = dataset.image_size
        # Unconditional models of unlabelled images still get one class (every stored label is 0).
        return {"n_features": height * width * channels, "n_classes": max(len(dataset.classes), 1)}
    if dataset.is_text:
        from app.families.builtin import LM_VOCAB

        return {"n_features": config.block_size, "n_classes": LM_VOCAB}
    return {"n_features": len(dataset.feature_columns), "n_classes": max(len(dataset.classes), 2)}


def check_budget(spec, config, shape: dict[str, int], rows: int) -> None:
    """422 when training this network on `rows` records is over a model budget."""
    try:
        budget.check(budget.estimate(spec, config, shape["n_features"], shape["n_classes"], rows))
    except budget.BudgetExceeded as exc:
        raise Unprocessable(str(exc)) from None


def within_budget(session: Session, model: Model) -> bool:
    """Whether retraining the model's current network on its current data is within the budgets
    now (they may have been lowered since the model was created): the background jobs that train
    copies of it (references, rehearsal) are not scheduled otherwise."""
    version = session.scalar(select(ModelVersion).where(
        ModelVersion.model_id == model.id, ModelVersion.version == model.current_version))
    if version is None:
        return True
    spec = get_family(model.family)
    data = session.get(DatasetVersion, version.dataset_version_id)
    try:
        budget.check(budget.estimate(spec, spec.parse_params(version.params), version.shape["n_features"],
                                     version.shape["n_classes"], data.rows if data else 0))
    except budget.BudgetExceeded:
        return False
    return True


def check_job_quota(session: Session, principal: Principal) -> None:
    limit = get_settings().max_active_jobs_per_client
    _serialise_client(session, principal.client)
    if job_service.count_active(session, principal.client) >= limit:
        raise TooManyRequests(
            f"This client already has {limit} training or unlearning jobs queued or running.",
            headers={"Retry-After": "30"},
        )


def _serialise_client(session: Session, client: str) -> None:
    """Concurrent requests of one client must not all pass the count before any of them inserts
    its job. On PostgreSQL a transaction-scoped advisory lock per client orders them (the count
    runs after the lock, so it sees the jobs the previous holder committed); on SQLite the unit of
    work already holds the database's write lock."""
    if is_postgres(session):
        digest = hashlib.sha256(f"obliviate:job-quota:{client}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def create(session: Session, principal: Principal, body: ModelCreate) -> tuple[Model, Job]:
    spec, config = validate_family(body.family, body.params, body.unlearning_method)
    if body.unlearning_method == "sisa" and body.sisa is None:
        raise Unprocessable("The sisa unlearning method needs a model trained with sisa.")
    dataset, version = resolve_dataset_version(session, principal, body.dataset_id)
    check_data_kind(spec, dataset)
    if session.scalar(select(Model).where(Model.client == principal.client, Model.name == body.name)):
        raise Conflict(f"A model named '{body.name}' already exists.")
    if dataset.feature_columns and spec.name == "cnn_classifier":
        channels, height, width = config.image_shape
        if channels * height * width != len(dataset.feature_columns):
            raise Unprocessable(
                f"image_shape {config.image_shape} needs {channels * height * width} feature columns; "
                f"the dataset has {len(dataset.feature_columns)}."
            )
    if dataset.is_image:
        check_image_fit(config, dataset)
    check_budget(spec, config, network_shape(spec, config, dataset), version.rows)
    check_job_quota(session, principal)
    model = Model(
        id=uuid.uuid4(), client=principal.client, name=body.name, family=spec.name, dataset_id=dataset.id,
        params=spec.dump_params(config), sisa=body.sisa.model_dump() if body.sisa else None,
        holdout_fraction=body.holdout_fraction, seed=body.seed, unlearning_method=body.unlearning_method,
        created_at=utcnow(),
    )
    session.add(model)
    session.flush()
    job = job_service.create(
        session, client=principal.client, kind="training", model_id=model.id,
        payload={"dataset_version_id": str(version.id)},
    )
    return model, job


def get_for(session: Session, principal: Principal, name: str, *, client: str | None = None) -> Model:
    """The caller's model of this name. An admin key may name any client's model, and must name
    the client when more than one has a model of this name: names are unique per client only,
    so picking one would act on the wrong client's model. A non-admin key naming another client
    gets the same 404 as for a missing model."""
    if not principal.is_admin:
        if client not in (None, principal.client):
            raise NotFound("No model with this name.")
        client = principal.client
    query = select(Model).where(Model.name == name)
    if client is not None:
        query = query.where(Model.client == client)
    found = list(session.scalars(query.order_by(Model.client).limit(2)))
    if not found:
        raise NotFound("No model with this name.")
    if len(found) > 1:
        raise Conflict("Several clients have a model of this name; name one with the client query parameter.")
    return found[0]


def versions(session: Session, model: Model) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)))


def get_version(session: Session, model: Model, number: int) -> ModelVersion:
    version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number))
    if version is None:
        raise NotFound("No such version of this model.")
    return version


def current_version(session: Session, model: Model) -> ModelVersion:
    if model.current_version is None:
        raise Conflict("This model has no trained version yet; wait for its training job.")
    return get_version(session, model, model.current_version)


def to_out(session: Session, model: Model) -> ModelOut:
    return ModelOut(
        id=model.id, client=model.client, name=model.name, family=model.family, dataset_id=model.dataset_id, params=model.params,
        sisa=model.sisa, holdout_fraction=model.holdout_fraction, seed=model.seed,
        unlearning_method=model.unlearning_method, current=model.current_version, created_at=model.created_at,
        versions=[
            ModelVersionOut(
                version=v.version, created_at=v.created_at, sha256=v.sha256, metrics=v.metrics,
                dataset_version_id=v.dataset_version_id, origin=v.origin, destroyed=v.destroyed_at is not None,
                current=v.version == model.current_version,
            )
            for v in versions(session, model)
        ],
    )


def list_for(session: Session, principal: Principal) -> list[Model]:
    query = select(Model).order_by(Model.created_at.desc())
    if not principal.is_admin:
        query = query.where(Model.client == principal.client)
    return list(session.scalars(query.limit(500)))


def of_client(session: Session, client: str) -> list[Model]:
    """Every model of the client, by name: what an erasure searches (its certificate's scope)."""
    return list(session.scalars(select(Model).where(Model.client == client).order_by(Model.name, Model.id)))


def version_sha(shards: list[dict[str, Any]]) -> str:
    """One network: its weights' sha256. SISA: sha256 of the shard weight hashes in order."""
    if len(shards) == 1:
        return shards[0]["weights"]
    return hashlib.sha256("\n".join(s["weights"] for s in shards).encode()).hexdigest()


def record_version(session, *, model_id, dataset_version_id, family, params, seed, shape: dict, sisa, manifest_sha,
                   shards, metrics, origin, state=None, actor="worker") -> ModelVersion:
    """Insert the next version of a model and make it current (the caller's commit publishes it)."""
    model = session.get(Model, model_id, with_for_update=True)
    artifacts = {manifest_sha} | {s["weights"] for s in shards} | {c for s in shards for c in s.get("checkpoints") or []}
    artifact_service.adopt(session, artifacts)
    number = (session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id)) or 0) + 1
    version = ModelVersion(
        model_id=model_id, version=number, dataset_version_id=dataset_version_id, family=family, params=params,
        seed=seed, shape=shape, sisa=sisa,
        manifest_sha256=manifest_sha, shards=shards, sha256=version_sha(shards), metrics=metrics, origin=origin,
        state=state or {}, created_at=utcnow(),
    )
    session.add(version)
    model.current_version = number
    session.flush()
    audit_service.append(
        session, f"model:{model_id}", "model.version_created", actor,
        {"version": number, "sha256": version.sha256, "dataset_version_id": str(dataset_version_id),
         "manifest_sha256": manifest_sha, "origin": origin},
    )
    return version


# The unlearning job's look-ups and destruction (app/unlearning/service.py orchestrates them).

# Hashes per OR of LIKEs: SQLite's expression depth stays far below its limit.
REFERENCE_CHUNK = 200


def get_model(session: Session, model_id: uuid.UUID, *, lock: bool = False) -> Model:
    """`lock`: under the model's row lock, which promoting a new version (`record_version`) takes too."""
    model = session.get(Model, model_id, with_for_update=lock)
    if model is None:
        raise NotFound("No model with this id.")
    return model


def promoted_by(session: Session, model_id: uuid.UUID, job_id: uuid.UUID) -> bool:
    """Whether the job (an earlier attempt of it) already recorded a version of the model."""
    return any(v.origin.get("job_id") == str(job_id)
               for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == model_id)))


def version_artifacts(version: ModelVersion) -> set[str]:
    """Every stored hash a model version references: its manifest, weights and checkpoints, and
    an image model's sample grid (destroyed with the weights)."""
    shas = {version.manifest_sha256}
    if version.sample_grid_sha256:
        shas.add(version.sample_grid_sha256)
    for shard in version.shards:
        shas.add(shard["weights"])
        shas.update(shard.get("checkpoints") or [])
    return shas


def live_references(session: Session, shas: Sequence[str]) -> set[str]:
    """Which of these hashes a model version or reference model of any client, not destroyed,
    references. Shard
    hashes live in JSON, so rows are found by the hash's text (a hex digest is never escaped)
    and then confirmed from the parsed shards."""
    wanted = sorted(set(shas))
    found: set[str] = set()
    shards_text = cast(ModelVersion.shards, Text)
    for start in range(0, len(wanted), REFERENCE_CHUNK):
        chunk = wanted[start:start + REFERENCE_CHUNK]
        for version in session.scalars(select(ModelVersion).where(
                ModelVersion.destroyed_at.is_(None),
                or_(ModelVersion.manifest_sha256.in_(chunk), ModelVersion.sample_grid_sha256.in_(chunk),
                    *[shards_text.contains(sha) for sha in chunk]))):
            found |= version_artifacts(version) & set(wanted)
        # Reference models of the per-record audit hold weights too (app/models/reference_pool.py).
        found.update(session.scalars(select(ModelReference.weights_sha256).where(
            ModelReference.weights_sha256.in_(chunk), ModelReference.destroyed_at.is_(None))))
    return found


def superseded_versions(session: Session, model: Model, dataset_version_ids: Iterable[uuid.UUID]) -> list[ModelVersion]:
    """The model's live versions, other than the current one, trained on these dataset versions."""
    return list(session.scalars(select(ModelVersion).where(
        ModelVersion.model_id == model.id, ModelVersion.dataset_version_id.in_(list(dataset_version_ids)),
        ModelVersion.destroyed_at.is_(None), ModelVersion.version != model.current_version,
    )))


def mark_versions_destroyed(session: Session, versions: Iterable[ModelVersion]) -> set[str]:
    """Mark the versions destroyed; answers the hashes they referenced, whose bytes may go (the
    caller decides, for every hash of the destruction at once)."""
    candidates: set[str] = set()
    for version in versions:
        version.destroyed_at = utcnow()
        candidates |= version_artifacts(version)
    session.flush()
    return candidates


def dataset_versions_in_use(session: Session, dataset_version_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these dataset versions a live model version (of any model) was trained on."""
    wanted = list(dataset_version_ids)
    if not wanted:
        return set()
    return set(session.scalars(select(ModelVersion.dataset_version_id).where(
        ModelVersion.dataset_version_id.in_(wanted), ModelVersion.destroyed_at.is_(None))))
