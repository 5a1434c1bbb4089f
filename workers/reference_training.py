"""Training positions of a model's reference pool (the maths: workers/engine/verification/references.py): with
the model when its unlearning method is approximate (app.unlearning.method_choice.reference_pool_size,
workers/training.py), and by the `references` job (workers/references.py) after an erasure
destroyed the ones that held its subjects. The rows are app/models/reference_pool.py's.

References train on the model's training records (never its holdout), each on the subjects its
side of the pair holds, so a reference on a later dataset version keeps the same membership rule
and mixes freely with the older ones."""

from __future__ import annotations

import numpy as np

from app.artifacts.store import get_store
from app.config import get_settings
from workers.engine.verification import references as engine
from workers.engine.families.base import Shape
from workers.engine.records import TextRecords
from workers.engine.serialization import state_to_bytes
from workers.engine.training import device_from_setting


def row_membership(records, trained_ids: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """[rows, size] true where reference k trains on the row: its subject's side of each pair. A
    text record trains as several windows (rows), each labelled with its record id, and every
    window follows its record."""
    member = engine.membership(records.subject_keys[np.searchsorted(records.record_ids, trained_ids)].tolist(),
                               size, seed)
    if isinstance(records, TextRecords):
        return member[np.searchsorted(trained_ids, labels)]
    return member


def train_positions(family, config, shape: Shape, records, trained_ids: np.ndarray, *, seed: int, size: int,
                    positions: list[int], progress=None) -> dict[int, str]:
    """Train the given positions on the trained records; answers position → stored weights hash."""
    store = get_store()
    device = device_from_setting(get_settings().device)
    trained_ids = np.sort(trained_ids)
    features, labels = records.rows_for(trained_ids)
    member = row_membership(records, trained_ids, labels.numpy(), size, seed)
    found = {}
    for done, position in enumerate(positions):
        state = engine.train_reference(family, config, shape, features, labels, member[:, position], seed=seed,
                                       index=position, device=device)
        found[position] = store.put_bytes(state_to_bytes(state, {"reference": str(position)}))
        if progress:
            progress((done + 1) / len(positions), f"reference {done + 1}/{len(positions)}")
    return found

