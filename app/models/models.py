from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Model(Base):
    """A named model of one client; its versions are trained or unlearned copies."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("client", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    family: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("datasets.id"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {"shards": S, "slices": R, "slice_key": "subject"|"record"} or None for one network; without
    # slice_key (models created before it existed) the slices are cut by record.
    sisa: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    holdout_fraction: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    # Unlearning method for this model; None = the default policy (sisa / retrain / approximate).
    unlearning_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    current_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ModelVersion(Base):
    """Immutable record of one set of weights and exactly what trained them."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("dataset_versions.id"), index=True)
    family: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    # {"n_features": d, "n_classes": C}
    shape: Mapped[dict[str, int]] = mapped_column(JSON)
    sisa: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # sha256 of the manifest artifact: a Parquet table (record_id, shard, slice), shard -1 = holdout.
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    # Per shard (one entry without SISA): weights sha256 and checkpoint sha256 per slice.
    shards: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # sha256 over the shard weight hashes, in shard order: the version's identity.
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    # How the version came to be: {"kind": "training"|"unlearning"|"import", "method": ..., "job_id": ...}
    origin: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Extra family state (e.g. certified-removal residual spent so far).
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when the weights were destroyed because they still held an erased subject.
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # An image model's grid of samples (a PNG artifact) shown on the dashboard; destroyed with
    # the weights.
    sample_grid_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ModelReference(Base):
    """One reference model of the per-record membership audit: a network trained on one half of
    a model's training subjects (workers/engine/verification/references.py decides which half from the subject
    keys and `membership_seed`, so membership needs no storage).

    References hold personal data: they are part of the model's lineage. An erasure destroys
    every reference that held an erased subject, like a superseded model version, and a refill
    job trains a new one on the current data."""

    __tablename__ = "model_references"
    __table_args__ = (UniqueConstraint("model_id", "position", "generation"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("models.id"), index=True)
    # Which reference of the pool (0..K-1): positions 2j and 2j+1 split the subjects between them.
    position: Mapped[int] = mapped_column(Integer)
    # Pool size and seed of the membership rule this reference was trained under.
    pool_size: Mapped[int] = mapped_column(Integer)
    membership_seed: Mapped[int] = mapped_column(Integer)
    # How many times this position was (re)filled; a refill after an erasure is the next one.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("dataset_versions.id"), index=True)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ModelRehearsal(Base):
    """One unlearning rehearsal of a model version (workers/rehearsal.py): a random sample of its
    trained subjects erased in memory, a real retrain without them as the yardstick, and every
    approximate method's candidate settings compared with it. Only counts and figures are kept:
    the sampled subjects are never stored, nor anything the rehearsal trained."""

    __tablename__ = "model_rehearsals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("models.id"), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("dataset_versions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Subjects erased in memory and the trained records they held.
    subjects: Mapped[int] = mapped_column(Integer)
    forget_records: Mapped[int] = mapped_column(Integer)
    # Mean CPU seconds of one yardstick retrain; candidates' costs are fractions of it.
    retrain_cpu_s: Mapped[float] = mapped_column(Float)
    # One entry per candidate: method, settings, verdict, gaps, cost, passed (rehearsal_results.py).
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The passing candidate with the highest pass rate, the cheapest among equals
    # {"method", "settings"}, or None when none passed.
    chosen: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ModelBase(Base):
    """An imported Hugging Face base model (a `save_pretrained` directory) of one client, that
    hf_causal_lm models fine-tune. A base is not trained here and holds none of the client's
    data subjects: erasures never destroy it (its pretraining data is out of their scope).

    Its bytes are one normalised, uncompressed tar of the allowed files (app/models/bases.py),
    stored content-addressed under `archive_sha256`."""

    __tablename__ = "model_bases"
    __table_args__ = (UniqueConstraint("client", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    # The configuration's model_type: gpt2, llama or qwen2.
    architecture: Mapped[str] = mapped_column(String(32))
    # The settings of the architecture that decide its tensors (app/families/hf_architectures.py).
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Parameters, counted from the safetensors headers.
    parameters: Mapped[int] = mapped_column(BigInteger)
    archive_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Relative file name → {"sha256", "size"} of every file in the archive.
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
