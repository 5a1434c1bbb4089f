"""What a remediation job hands between its steps (docs/remediation.md), typed: plain Python,
importable by the workers (they never see a row)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Trigger:
    """A backdoor: feature name → value, and the class index it steers to."""

    features: tuple[tuple[str, float], ...]
    target: int


@dataclass(frozen=True)
class RemediationPlan:
    remediation_id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    dataset_id: uuid.UUID
    model_ids: tuple[uuid.UUID, ...]
    trigger: Trigger | None = None
    # Bias: the metadata column whose groups are compared, and the positive class index.
    group_column: str | None = None
    positive: int | None = None
    # The dataset's declared source column: the verdicts cluster the slice by subject and source.
    source_column: str | None = None


@dataclass(frozen=True)
class SliceErasure:
    """The dataset version without the slice, and the slice's record ids (stable across the
    versions of one lineage)."""

    version_id: uuid.UUID
    dataset_sha: str
    record_ids: tuple[int, ...]
    rows_removed: int
    subjects_removed: int
