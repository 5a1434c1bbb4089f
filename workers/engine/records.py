"""A dataset version in memory, as training and unlearning read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from app.artifacts.store import get_store
from app.datasets.ingest import read_version_table
from workers.engine.families.base import ModelFamily, Shape


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


@dataclass
class TextRecords(Records):
    """A text dataset version in memory: `features` are the training windows of every record
    (workers/engine/families/causal_lm.py) and `labels` each window's record id, so `rows_for`
    selects a set of records' windows as it selects tabular rows."""

    texts: list[str] = field(default_factory=list)

    def rows_for(self, ids: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = np.isin(self.labels, ids)
        return torch.from_numpy(self.features[mask]), torch.from_numpy(self.labels[mask])

    def texts_for(self, ids: npt.NDArray[np.int64]) -> list[str]:
        return [self.texts[i] for i in np.searchsorted(self.record_ids, ids).tolist()]


def load_text_records(version_sha: str, block_size: int, codec: Any = None) -> TextRecords:
    """`codec` turns texts into tokens (workers/engine/families/causal_lm.py, ByteCodec); None: bytes."""
    from workers.engine.families.causal_lm import BYTES, record_windows

    table = read_version_table(get_store(), version_sha)
    order = np.argsort(table.column("record_id").to_numpy(), kind="stable")
    record_ids = table.column("record_id").to_numpy()[order].astype(np.int64)
    column = table.column("text").to_pylist()
    texts = [column[i] for i in order.tolist()]
    windows, owners = record_windows(texts, block_size, codec or BYTES)
    return TextRecords(
        record_ids=record_ids, subject_keys=np.asarray(table.column("subject_key").to_pylist(), dtype=object)[order],
        features=windows, labels=record_ids[owners], texts=texts,
    )


def records_and_shape(family: ModelFamily, config: object, dataset_sha: str, features: Sequence[str], classes: int,
                      text: bool) -> tuple[Records, Shape]:
    """A dataset version's records in memory, and the shape of the networks trained on them:
    text datasets for a text family (causal_lm: windows of config.block_size, in the tokens of
    the family's codec for this config when it has one), image datasets for an image family
    (image_diffusion: pixels), else tabular."""
    if getattr(family, "data_kind", None) == "image":
        return load_image_records(dataset_sha, config), family.shape(config, classes)  # type: ignore[attr-defined]
    if text:
        codec = family.codec(config) if hasattr(family, "codec") else None
        return load_text_records(dataset_sha, config.block_size, codec), family.shape(config)  # type: ignore[attr-defined]
    records = load_records(dataset_sha, features)
    return records, Shape(n_features=records.features.shape[1], n_classes=max(classes, 2))


def load_image_records(version_sha: str, config: object) -> Records:
    """An image dataset version in memory: each record's PNG decoded to pixels in [-1, 1], channel
    first and flattened (workers/engine/families/image_diffusion.py), its label the dataset's."""
    from workers.engine.families.image_diffusion import decode_png, pixels_to_features

    table = read_version_table(get_store(), version_sha)
    order = np.argsort(table.column("record_id").to_numpy(), kind="stable")
    column = table.column("image").to_pylist()
    pixels = [decode_png(column[i], config) for i in order.tolist()]
    size = int(config.image_size)  # type: ignore[attr-defined]
    channels = int(config.channels)  # type: ignore[attr-defined]
    features = (pixels_to_features(np.stack(pixels)) if pixels
                else np.zeros((0, channels * size * size), dtype=np.float32))
    return Records(
        record_ids=table.column("record_id").to_numpy()[order].astype(np.int64),
        subject_keys=np.asarray(table.column("subject_key").to_pylist(), dtype=object)[order],
        features=features, labels=table.column("label").to_numpy()[order].astype(np.int64),
    )
