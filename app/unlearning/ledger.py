"""The unlearning job's ledger: what its steps have done so far, stored as `job.result`.

Each step of `app/unlearning/service.py` reads the ledger as committed, adds its part and saves
it, fenced by its attempt; the certificates read the finished job's entries from it. The stored
JSON keeps the shape jobs have always written, so a job an earlier release left half-way still
completes: `from_json` reads it and `to_json` writes it back key for key, unknown keys included.

    {"requests": [request ids], "dataset": {...entry, "destroyed": [...]},
     "model": {...entry, "destroyed": [...], "destroyed_references": [...]},
     "artifacts_to_delete": [sha256...], "note": "...",
     "no_op_control": {...the checks on the model before unlearning, "testable", "meaning"}}

`no_op_control` lives among the kept keys (`other`) so that ledgers of any release read back alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.unlearning.types import JsonObject, JsonValue

__all__ = ["JobLedger"]

_KNOWN = ("requests", "dataset", "model", "artifacts_to_delete", "note")
# The key of the no-op control's block (kept in `other`, read through `JobLedger.no_op_control`).
NO_OP_CONTROL = "no_op_control"


def _items(value: JsonValue | None) -> list[JsonValue]:
    """A stored list (absent or null reads as empty)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


@dataclass(frozen=True)
class JobLedger:
    """The job's partial results; None for a part no step has written yet."""

    # The live requests the job serves (after `start`).
    requests: tuple[str, ...] | None = None
    # The dataset's erasure (`erase_dataset`) and the model's new version or why there is none
    # (`record_unlearned`, `record_unchanged`), each with what `destroy_superseded` destroyed.
    dataset: JsonObject | None = None
    model: JsonObject | None = None
    # Hashes whose deletion is recorded, kept so a retry finishes them before completing.
    artifacts_to_delete: tuple[str, ...] | None = None
    note: str | None = None
    # Keys this release does not write, kept as stored.
    other: JsonObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> JobLedger:
        raw = raw or {}
        requests, artifacts = raw.get("requests"), raw.get("artifacts_to_delete")
        return cls(
            requests=None if requests is None else tuple(str(r) for r in requests),
            dataset=raw.get("dataset"), model=raw.get("model"),
            artifacts_to_delete=None if artifacts is None else tuple(str(a) for a in artifacts),
            note=raw.get("note"), other={k: v for k, v in raw.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {}
        if self.requests is not None:
            out["requests"] = list(self.requests)
        if self.dataset is not None:
            out["dataset"] = dict(self.dataset)
        if self.model is not None:
            out["model"] = dict(self.model)
        if self.artifacts_to_delete is not None:
            out["artifacts_to_delete"] = list(self.artifacts_to_delete)
        if self.note is not None:
            out["note"] = self.note
        out.update(self.other)
        return out

    @classmethod
    def without_requests(cls) -> JobLedger:
        """Every request of the job was held, cancelled or denied before it ran."""
        return cls(requests=(), note="no live requests")

    def serving(self, request_ids: Iterable[uuid.UUID]) -> JobLedger:
        return replace(self, requests=tuple(str(r) for r in request_ids))

    def with_dataset(self, entry: JsonObject) -> JobLedger:
        return replace(self, dataset=entry)

    def with_model(self, entry: JsonObject) -> JobLedger:
        return replace(self, model=entry)

    def with_destroyed(self, *, artifacts: Iterable[str], model_versions: Sequence[JsonObject],
                       references: Sequence[JsonObject], dataset_versions: Sequence[JsonObject]) -> JobLedger:
        """Add what one destruction step destroyed to the entries it held the subjects for."""
        model, dataset = self.model, self.dataset
        if model is not None:
            model = {**model, "destroyed": _items(model.get("destroyed")) + list(model_versions)}
            if references:
                model["destroyed_references"] = _items(model.get("destroyed_references")) + list(references)
        if dataset is not None:
            dataset = {**dataset, "destroyed": _items(dataset.get("destroyed")) + list(dataset_versions)}
        return replace(self, model=model, dataset=dataset,
                       artifacts_to_delete=tuple(sorted(set(self.artifacts_to_delete or ()) | set(artifacts))))

    @property
    def no_op_control(self) -> JsonObject | None:
        """The checks on the model before unlearning (`record_unlearned`), which the
        certificate carries next to the result's; None where no step recorded one."""
        found = self.other.get(NO_OP_CONTROL)
        return dict(found) if isinstance(found, Mapping) else None

    def with_no_op_control(self, control: JsonObject) -> JobLedger:
        return replace(self, other={**self.other, NO_OP_CONTROL: dict(control)})

    def certified(self, job_id: uuid.UUID) -> tuple[JsonObject | None, JsonObject | None]:
        """The (dataset, model) entries a certificate lists for this job, each naming the job."""
        dataset = {**self.dataset, "job_id": str(job_id)} if self.dataset else None
        model = {**self.model, "job_id": str(job_id)} if self.model else None
        return dataset, model
