"""What the unlearning job hands between its steps, typed (docs/architecture.md, "The unlearning engine").

The app's services (`app/unlearning/service.py`) answer and accept these frozen records; the
workers sequence the steps and do the maths on them, and never see a row or build JSON for the
database. Conversion to and from the JSON of `job.result` and of the model version rows happens
here, on the app side: `to_json` writes exactly the keys (and key order) the job result and the
certificates have always carried, `from_json` reads them back.

Workers import this module; it imports neither torch, numpy nor the workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from app.families.shape import Shape

# A value JSON can carry: what method details, family parameters and model state hold.
JsonValue: TypeAlias = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
JsonObject: TypeAlias = Mapping[str, JsonValue]

# Exact methods, carried out by the job runner from the dataset lineage (they retrain); with
# "none_needed" (no weights saw the subjects) the outcomes whose verdicts never escalate.
EXACT_METHODS: frozenset[str] = frozenset({"retrain", "sisa"})
EXACT: frozenset[str] = EXACT_METHODS | {"none_needed"}

__all__ = [
    "EXACT", "EXACT_METHODS", "DatasetErasure", "Escalation", "Figures", "JobAttempt", "JsonObject", "JsonValue", "LineageProof",
    "MethodSettings", "ModelSnapshot", "SampledReference", "SetFigures", "Shape", "Shard", "Sisa", "UnlearningPlan", "Verification",
    "VerifiedVersion",
]


@dataclass(frozen=True)
class JobAttempt:
    """The worker's claim on a job: every write of a step is fenced by this attempt."""

    job_id: uuid.UUID
    attempt: int
    lease_seconds: float


@dataclass(frozen=True)
class UnlearningPlan:
    """The job's live requests and the subjects they name, after `service.start`."""

    job_id: uuid.UUID
    client: str
    # The model to unlearn, or None for a job that only erases a dataset no model was trained on.
    model_id: uuid.UUID | None
    dataset_id: uuid.UUID | None
    # (identifier kind, subject key) of every subject of the live requests, sorted.
    pairs: tuple[tuple[str, str], ...]
    request_ids: tuple[uuid.UUID, ...]
    # Each request's own (kind, subject key) pairs, in `request_ids` order: a batch's requests
    # are each verified over their own subjects.
    request_pairs: tuple[tuple[tuple[str, str], ...], ...] = ()

    def request_keys(self, keys: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(request id, its subject keys among `keys`) per request: the keys of one subject kind
        (a dataset's) that each request erases."""
        wanted = set(keys)
        return tuple((str(request_id), tuple(sorted({key for _kind, key in pairs if key in wanted})))
                     for request_id, pairs in zip(self.request_ids, self.request_pairs, strict=True))


@dataclass(frozen=True)
class DatasetErasure:
    """The dataset version without the subjects (`service.erase_dataset`)."""

    dataset_id: uuid.UUID
    name: str
    version_before: int
    sha256_before: str
    version_after: int
    sha256_after: str
    rows_removed: int
    subjects_removed: int
    # The dataset version the new model version is trained on, and the erased keys of the
    # dataset's subject kind (what the model step and the destruction look for).
    version_id: uuid.UUID
    keys: tuple[str, ...]

    def to_json(self) -> dict[str, JsonValue]:
        """The `dataset` entry of job.result (without its `destroyed` list)."""
        return {
            "dataset_id": str(self.dataset_id), "name": self.name,
            "version_before": self.version_before, "sha256_before": self.sha256_before,
            "version_after": self.version_after, "sha256_after": self.sha256_after,
            "rows_removed": self.rows_removed, "subjects_removed": self.subjects_removed,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, version_id: uuid.UUID, keys: Sequence[str]) -> DatasetErasure:
        return cls(
            dataset_id=uuid.UUID(str(raw["dataset_id"])), name=str(raw["name"]),
            version_before=int(raw["version_before"]), sha256_before=str(raw["sha256_before"]),
            version_after=int(raw["version_after"]), sha256_after=str(raw["sha256_after"]),
            rows_removed=int(raw["rows_removed"]), subjects_removed=int(raw["subjects_removed"]),
            version_id=version_id, keys=tuple(keys),
        )


# How a SISA shard is cut into slices (workers/engine/training.py `slice_positions`): by a hash of
# each record's id, or of its subject key so a subject's records share one slice. Models trained
# before the choice existed stored no `slice_key` and were cut by record; that stays their reading.
SLICE_BY_RECORD = "record"
SLICE_BY_SUBJECT = "subject"
SLICE_KEYS = (SLICE_BY_RECORD, SLICE_BY_SUBJECT)


@dataclass(frozen=True)
class Sisa:
    shards: int
    slices: int
    slice_key: str = SLICE_BY_RECORD

    def __post_init__(self) -> None:
        if self.slice_key not in SLICE_KEYS:
            raise ValueError(f"unknown SISA slice key {self.slice_key!r}")

    def to_json(self) -> dict[str, Any]:
        # A record-sliced model keeps the JSON it always had; only the newer layout is spelled out.
        found: dict[str, Any] = {"shards": self.shards, "slices": self.slices}
        if self.slice_key != SLICE_BY_RECORD:
            found["slice_key"] = self.slice_key
        return found

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Sisa | None:
        if raw is None:
            return None
        return cls(shards=int(raw["shards"]), slices=int(raw["slices"]),
                   slice_key=str(raw.get("slice_key", SLICE_BY_RECORD)))


@dataclass(frozen=True)
class Shard:
    """One network of a model version: its weights, for SISA the checkpoint after each slice,
    and the number of training records its partition holds (`records`; None in versions written
    before it was kept). An image model's SISA sampling draws each shard in proportion to it."""

    shard: int
    weights: str
    checkpoints: tuple[str, ...] = ()
    records: int | None = None

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"shard": self.shard, "weights": self.weights, "checkpoints": list(self.checkpoints)}
        if self.records is not None:
            out["records"] = self.records
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Shard:
        records = raw.get("records")
        return cls(shard=int(raw["shard"]), weights=str(raw["weights"]),
                   checkpoints=tuple(str(c) for c in raw.get("checkpoints") or ()),
                   records=None if records is None else int(records))


@dataclass(frozen=True)
class MethodSettings:
    """The method a job starts with and the overrides of its default settings, with where they
    come from (app/unlearning/method_choice.py): "rehearsal" (they passed the model's rehearsal),
    "defaults", or "family_history" (the family's rehearsals moved the job off a method that never
    passed, `reason` says how)."""

    method: str
    settings: JsonObject = field(default_factory=dict)
    source: str = "defaults"
    rehearsal_id: uuid.UUID | None = None
    reason: str | None = None

    def to_json(self, resolved: JsonObject | None = None) -> dict[str, JsonValue]:
        """The `method_settings` entry of job.result and the certificate; `resolved` (the method's
        whole config as it ran, defaults filled in) replaces the overrides when given."""
        out: dict[str, JsonValue] = {
            "method": self.method, "settings": dict(resolved if resolved is not None else self.settings),
            "source": self.source, "rehearsal_id": None if self.rehearsal_id is None else str(self.rehearsal_id),
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything about the model's current version that producing the next one needs."""

    model: str
    model_id: uuid.UUID
    family: str
    params: JsonObject
    seed: int
    shape: Shape
    sisa: Sisa | None
    holdout_fraction: float
    version_before: int
    sha256_before: str
    old_shards: tuple[Shard, ...]
    old_state: JsonObject
    manifest_sha: str
    features: tuple[str, ...]
    old_dataset_sha: str
    new_dataset_sha: str
    new_dataset_version_id: uuid.UUID
    # The new dataset version descends directly from the one the model was trained on, so every
    # record id means the same row in both and SISA checkpoints stay valid.
    same_lineage: bool
    # The method the model's policy asks for (method_choice.choose_method).
    method: str
    # Whether the current version's dataset version holds any of the erased subjects at all.
    holds: bool
    # The live reference models of the per-record audit, and how many the model should have.
    references: tuple[ReferenceModel, ...] = ()
    reference_pool: int = 0
    # A text dataset (a language model's): records are texts, not feature rows.
    text: bool = False
    # The settings `method` starts with (the rehearsal's, the defaults…).
    method_settings: MethodSettings | None = None


@dataclass(frozen=True)
class ReferenceModel:
    """One live reference of a model (app/models/reference_pool.py): its weights and membership rule."""

    id: uuid.UUID
    position: int
    pool_size: int
    membership_seed: int
    weights: str


@dataclass(frozen=True)
class SetFigures:
    """Accuracy and mean loss on one set of records; None figures when it is empty."""

    accuracy: float | None
    loss: float | None
    n: int

    def to_json(self) -> dict[str, JsonValue]:
        return {"accuracy": self.accuracy, "loss": self.loss, "n": self.n}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SetFigures:
        return cls(accuracy=raw["accuracy"], loss=raw["loss"], n=int(raw["n"]))


@dataclass(frozen=True)
class Figures:
    """One model version measured on the forget records, a retain sample and the holdout."""

    forget: SetFigures
    retain: SetFigures
    holdout: SetFigures
    # Forget-vs-holdout membership-inference AUC; None without a holdout set.
    mia_auc: float | None
    # Language models only: perplexities, the loss and Min-K%++ membership AUCs and verbatim
    # extraction (workers/engine/unlearning/verification.py, `text_figures`). For them the set
    # figures are next-token accuracy and mean token loss, and `n` counts records.
    text: JsonObject | None = None

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"forget": self.forget.to_json(), "retain": self.retain.to_json(),
                                     "holdout": self.holdout.to_json(), "mia_auc": self.mia_auc}
        if self.text is not None:
            out["text"] = self.text
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Figures:
        return cls(forget=SetFigures.from_json(raw["forget"]), retain=SetFigures.from_json(raw["retain"]),
                   holdout=SetFigures.from_json(raw["holdout"]), mia_auc=raw["mia_auc"], text=raw.get("text"))


@dataclass(frozen=True)
class LineageProof:
    forget_records: int
    # Forget records the new manifest still trains on; anything but 0 stops the job.
    in_new_manifest: int


@dataclass(frozen=True)
class SampledReference:
    """Without a holdout: a network retrained on a sample of the retained records, on the forget set."""

    forget_accuracy: float | None
    forget_loss: float | None
    retain_sample: int


@dataclass(frozen=True)
class Verification:
    before: Figures
    after: Figures
    lineage_proof: LineageProof
    holdout_available: bool
    reference: SampledReference | None = None
    # The statistical verdicts (workers/engine/verification/checks.py): the overall
    # verdict, its reasons and every check with its estimate, interval, α and tolerance.
    verdicts: JsonObject | None = None

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {
            "before": self.before.to_json(), "after": self.after.to_json(),
            "lineage_proof": {"forget_records": self.lineage_proof.forget_records,
                              "in_new_manifest": self.lineage_proof.in_new_manifest},
            "holdout_available": self.holdout_available,
        }
        if self.verdicts is not None:
            out["verdicts"] = dict(self.verdicts)
        if self.reference is not None:
            out["reference"] = {"forget_accuracy": self.reference.forget_accuracy,
                                "forget_loss": self.reference.forget_loss, "retain_sample": self.reference.retain_sample}
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Verification:
        reference = raw.get("reference")
        return cls(
            before=Figures.from_json(raw["before"]), after=Figures.from_json(raw["after"]),
            lineage_proof=LineageProof(int(raw["lineage_proof"]["forget_records"]),
                                       int(raw["lineage_proof"]["in_new_manifest"])),
            holdout_available=bool(raw["holdout_available"]),
            reference=None if reference is None else SampledReference(
                reference["forget_accuracy"], reference["forget_loss"], int(reference["retain_sample"])),
            verdicts=raw.get("verdicts"),
        )


@dataclass(frozen=True)
class Escalation:
    """An approximate result that missed its thresholds, replaced by an exact method."""

    from_method: str
    to_method: str
    reasons: tuple[str, ...]
    # The escalated result's verification block (its verdicts), kept in the certificate.
    verdicts: JsonObject | None = None

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"from": self.from_method, "to": self.to_method, "reasons": list(self.reasons)}
        if self.verdicts is not None:
            out["verdict"] = self.verdicts.get("verdict")
            out["verdicts"] = dict(self.verdicts)
        return out


@dataclass(frozen=True)
class VerifiedVersion:
    """Stage 3 of a new model version: the candidate after verification and any escalation, as the
    app stores it (its artifacts already stored)."""

    method: str
    requested_method: str
    manifest_sha: str
    shards: tuple[Shard, ...]
    state: JsonObject
    # The method's own figures (steps, losses, budget…), JSON-serialisable.
    details: JsonObject
    verification: Verification
    escalations: tuple[Escalation, ...] = ()
    # The requested approximate method's whole config as it ran (before any escalation); None
    # for exact methods.
    settings: JsonObject | None = None
    # The same checks on the model before unlearning and whether they can see the subjects
    # (workers/engine/verification/control.py); None where no weight saw the subjects.
    no_op_control: JsonObject | None = None
