"""The parts of a format-3 body that are more than a copy of the request's facts: the scope of
the search, each model's method kind with what supports it, and the copies downloaded before the
erasure. Pure functions of the typed input (app/certificates/service.py builds the body)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.audit.chain import format_time
from app.audit.downloads import DownloadedCopy

# A dataset's or a model's entry as its job recorded it (app/unlearning/ledger.py), with the job.
Entry = Mapping[str, Any]
MethodKind = Literal["exact", "approximate"]

COPIES_STATEMENT = (
    "These copies were downloaded before the erasure. They are outside the service's reach: this "
    "erasure did not, and cannot, remove the person from them; whoever holds them must erase them."
)
EXACT_STATEMENT = (
    "Exact: the model after erasure was trained only on the dataset version without the person's "
    "records, and its weights have the hash below; its verification figures are a sanity check, "
    "not the proof."
)
NEVER_HELD_STATEMENT = "Exact: the model's current version was never trained on the person's records."
BASE_SCOPE_STATEMENT = (
    "This model was fine-tuned from an imported base model. The erasure covers the fine-tuning data, "
    "the service's dataset named here: an exact method is exact with respect to it. The base's own "
    "pretraining data is out of scope: the service never held it and cannot erase anything from it."
)


@dataclass(frozen=True)
class Checked:
    """A dataset or model searched for the person, by name and version, and whether it held them."""

    name: str
    version: int | None
    held_subject: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "held_subject": self.held_subject}


@dataclass(frozen=True)
class Scope:
    """What was searched: the request's identifier kinds, the kinds its identifiers resolved to
    through the client's links (app/identities/), and the client's datasets and models."""

    identifier_kinds: tuple[str, ...]
    datasets: tuple[Checked, ...] = ()
    models: tuple[Checked, ...] = ()
    # Every kind searched: the request's own and those reached through links; () when the request
    # was planned before resolution was recorded (its own kinds were all that was searched).
    resolved_kinds: tuple[str, ...] = ()
    # How many subject keys the search looked for (the request's and the linked ones).
    keys_searched: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"identifier_kinds": sorted(self.identifier_kinds),
                "resolved_kinds": sorted(set(self.resolved_kinds or self.identifier_kinds)),
                "subject_keys_searched": self.keys_searched,
                "datasets": [c.to_json() for c in self.datasets], "models": [c.to_json() for c in self.models]}


@dataclass(frozen=True)
class ModelErasure:
    """One model's erasure as its job recorded it."""

    entry: Entry
    method_kind: MethodKind
    # The same job's dataset entry: the version without the records an exact model was trained on.
    dataset: Entry | None = None
    # The checks run on the weights before unlearning (the job ledger's `no_op_control`).
    no_op_control: Entry | None = None


def _verdicts(entry: Entry) -> Mapping[str, Any]:
    verification = entry.get("verification")
    verdicts = verification.get("verdicts") if isinstance(verification, Mapping) else None
    return verdicts if isinstance(verdicts, Mapping) else {}


def request_verdict(entry: Entry, request_id: uuid.UUID) -> str | None:
    """The request's own verdict where the checks give one per request, else the job's."""
    verdicts = _verdicts(entry)
    per_request = verdicts.get("requests")
    if isinstance(per_request, Mapping) and isinstance(per_request.get(str(request_id)), str):
        return str(per_request[str(request_id)])
    verdict = verdicts.get("verdict")
    return verdict if isinstance(verdict, str) else None


def own_part(block: Any, request_id: uuid.UUID) -> Any:
    """A verification block (or an entry holding one under `verdicts`) with only this request's
    part of a batch's per-request verdicts: another request's subjects are no business of this
    person's certificate."""
    if not isinstance(block, Mapping):
        return block
    out = {key: own_part(value, request_id) if key == "verdicts" else value for key, value in block.items()}
    for key in ("requests", "request_checks"):
        per_request = out.get(key)
        if isinstance(per_request, Mapping):
            out[key] = {k: v for k, v in per_request.items() if k == str(request_id)}
    return out


def request_checks(entry: Entry, request_id: uuid.UUID) -> Mapping[str, Any] | None:
    """The request's own verification block in a batch (its checks over its own subjects)."""
    per_request = _verdicts(entry).get("request_checks")
    found = per_request.get(str(request_id)) if isinstance(per_request, Mapping) else None
    return found if isinstance(found, Mapping) else None


def _exact_basis(model: ModelErasure) -> dict[str, Any]:
    entry, details = model.entry, model.entry.get("details") or {}
    if entry.get("version_after") is None:
        return {"statement": NEVER_HELD_STATEMENT,
                "weights_sha256": {"before": entry.get("sha256_before"), "after": entry.get("sha256_before")}}
    dataset = model.dataset
    return {
        "statement": EXACT_STATEMENT,
        "dataset_version_without_records": None if dataset is None else {
            "name": dataset.get("name"), "version": dataset.get("version_after"), "sha256": dataset.get("sha256_after")},
        # SISA: the shards and slices retrained; a full retrain has no such figures (None).
        "shards_retrained": details.get("shards_retrained"), "slices_retrained": details.get("slices_retrained"),
        "slices_total": details.get("slices_total"),
        "weights_sha256": {"before": entry.get("sha256_before"), "after": entry.get("sha256_after")},
    }


def model_section(model: ModelErasure, request_id: uuid.UUID) -> dict[str, Any]:
    """The job's entry with its method kind: for exact, what makes it exact, and its figures
    labelled `sanity_check`; for approximate, its verification, the no-op control and the
    request's verdict, and in a batch the request's own checks (`request_verification`). Of a
    batch's per-request figures only this request's are kept."""
    out = {key: value for key, value in model.entry.items() if key != "verification"}
    out["method_kind"] = model.method_kind
    if isinstance(model.entry.get("base"), Mapping):
        out["base"] = {**model.entry["base"], "statement": BASE_SCOPE_STATEMENT}
    verification = own_part(model.entry.get("verification"), request_id)
    if model.method_kind == "exact":
        out["exact"] = _exact_basis(model)
        if verification is not None:
            out["sanity_check"] = verification
        return out
    out["verification"] = verification
    if model.no_op_control is not None:
        out["no_op_control"] = own_part(dict(model.no_op_control), request_id)
    out["verdict"] = request_verdict(model.entry, request_id)
    own = request_checks(model.entry, request_id)
    if own is not None:
        # A batch: this request's own checks, over its own subjects, next to the batch's.
        out["request_verification"] = dict(own)
    return out


def _versions(entry: Entry, id_field: str, *, held: bool) -> Iterable[tuple[uuid.UUID, int]]:
    """The versions of this entry's model or dataset that held the person: the one the job
    started from (when it held them) and every one it destroyed."""
    owner = entry.get(id_field)
    if owner is None:
        return []
    found = {int(entry["version_before"])} if held and entry.get("version_before") is not None else set()
    found |= {int(d["version"]) for d in entry.get("destroyed") or () if isinstance(d, Mapping) and "version" in d}
    return [(uuid.UUID(str(owner)), version) for version in sorted(found)]


def erased_versions(datasets: Sequence[Entry], models: Sequence[ModelErasure]) -> tuple[
        list[tuple[uuid.UUID, int]], list[tuple[uuid.UUID, int]]]:
    """(model versions, dataset versions) the erasure took the person out of."""
    model_versions = [v for m in models for v in _versions(m.entry, "model_id", held=m.entry.get("version_after") is not None)]
    dataset_versions = [v for d in datasets for v in _versions(d, "dataset_id", held=True)]
    return model_versions, dataset_versions


def copies_section(copies: Sequence[DownloadedCopy]) -> dict[str, Any]:
    return {"statement": COPIES_STATEMENT, "copies": [
        {"kind": c.kind, "id": str(c.owner_id), "version": c.version, "artifact": c.artifact, "sha256": c.sha256,
         "downloaded_by_key": c.key_id, "client": c.client, "at": format_time(c.at)} for c in copies]}
