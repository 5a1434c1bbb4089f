"""A dataset version in memory, as training and unlearning read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from app.artifacts.store import get_store
from app.datasets.ingest import read_version_table


@dataclass
class Records:
    """A dataset version in memory, indexed by record id."""

    record_ids: npt.NDArray[np.int64]
    subject_keys: npt.NDArray[np.object_]
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def rows_for(self, ids: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.searchsorted(self.record_ids, ids)
        return torch.from_numpy(self.features[index]), torch.from_numpy(self.labels[index])


def load_records(version_sha: str, feature_columns: Sequence[str]) -> Records:
    table = read_version_table(get_store(), version_sha)
    order = np.argsort(table.column("record_id").to_numpy(), kind="stable")
    features = np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in feature_columns])
    return Records(
        record_ids=table.column("record_id").to_numpy()[order].astype(np.int64),
        subject_keys=np.asarray(table.column("subject_key").to_pylist(), dtype=object)[order],
        features=np.ascontiguousarray(features[order]),
        labels=table.column("label").to_numpy()[order].astype(np.int64),
    )
