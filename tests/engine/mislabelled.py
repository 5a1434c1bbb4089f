"""sklearn's digits with deliberately mislabelled records, the engine tests' memorising case: the
first `records` shuffled digits, mislabelled, are the forget set (a network trained on them
memorises them); the next `records`, mislabelled the same way, the atypical holdout (the
membership-inference reference); then 1,200 correctly labelled retain records and the rest a
clean holdout."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

RETAIN = 1200


def mislabelled_digits(records: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features / 16.0, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    x, y = x[order], y[order]
    wrong = (y[: 2 * records] + torch.randint(1, 10, (2 * records,), generator=generator)) % 10
    end = 2 * records + RETAIN
    return {
        "forget": (x[:records], wrong[:records]),
        "atypical_holdout": (x[records:2 * records], wrong[records:]),
        "retain": (x[2 * records:end], y[2 * records:end]),
        "holdout": (x[end:], y[end:]),
    }
