"""The checks of a remediated slice (docs/remediation.md): a backdoor's attack success rate for
a poisoning request and per-group metrics for a bias request, each on the model before, after,
and a retrain without the slice (the exact reference).

Measured on the held-out records the new dataset keeps (never trained on by any of the three),
or, for a model without a holdout, on the records outside the slice, which the check then says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from app.unlearning.types import JsonObject, JsonValue
from workers.engine.families.base import ModelFamily
from workers.engine.partition import HOLDOUT
from workers.engine.records import Records
from workers.engine.training import ensemble_proba

Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Networks:
    """The three models a check compares."""

    before: Sequence[nn.Module]
    after: Sequence[nn.Module]
    retrain: Sequence[nn.Module]


@dataclass(frozen=True)
class EvaluationSet:
    records: Records
    ids: Ids
    # "holdout", or "retained" when the model held nothing out.
    name: str


def evaluation_set(records: Records, manifest_ids: Ids, manifest_shards: npt.NDArray[np.int64], forget: Ids) -> EvaluationSet:
    held = manifest_ids[manifest_shards == HOLDOUT]
    held = np.sort(held[np.isin(held, records.record_ids)])
    if len(held):
        return EvaluationSet(records, held, "holdout")
    rest = records.record_ids[~np.isin(records.record_ids, forget)]
    return EvaluationSet(records, np.sort(rest), "retained")


def _predict(family: ModelFamily, networks: Sequence[nn.Module], features: torch.Tensor) -> npt.NDArray[np.int64]:
    with torch.no_grad():
        return ensemble_proba(family, networks, features).argmax(dim=1).cpu().numpy().astype(np.int64)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class Figures3:
    before: float | None
    after: float | None
    retrain: float | None

    def to_json(self) -> dict[str, JsonValue]:
        gap = None if self.after is None or self.retrain is None else abs(self.after - self.retrain)
        return {"before": _round(self.before), "after": _round(self.after), "retrain": _round(self.retrain),
                "after_vs_retrain": _round(gap)}


def attack_success(family: ModelFamily, networks: Networks, evaluation: EvaluationSet,
                   trigger: Sequence[tuple[int, float]], target: int) -> JsonObject:
    """The share of evaluation rows not of the target class that the trigger turns into it, and
    the clean accuracy on all evaluation rows."""
    x, y = evaluation.records.rows_for(evaluation.ids)
    victims = y.numpy() != target
    if not victims.any():
        return {"status": "not run", "reason": "no evaluation row outside the target class"}
    triggered = x[torch.from_numpy(victims)].clone()
    for column, value in trigger:
        triggered[:, column] = value

    def asr(group: Sequence[nn.Module]) -> float:
        return float((_predict(family, group, triggered) == target).mean())

    def clean(group: Sequence[nn.Module]) -> float:
        return float((_predict(family, group, x) == y.numpy()).mean())

    return {
        "status": "run", "evaluated_on": evaluation.name, "rows": int(victims.sum()),
        "attack_success_rate": Figures3(asr(networks.before), asr(networks.after), asr(networks.retrain)).to_json(),
        "clean_accuracy": Figures3(clean(networks.before), clean(networks.after), clean(networks.retrain)).to_json(),
    }


def group_metrics(family: ModelFamily, networks: Networks, evaluation: EvaluationSet,
                  groups: dict[int, str], positive: int) -> JsonObject:
    """Accuracy and positive rate per group value, and the largest gap in positive rate between
    groups, for the model before, after and the retrain."""
    x, y = evaluation.records.rows_for(evaluation.ids)
    labels = y.numpy()
    values = np.asarray([groups.get(int(i), "") for i in evaluation.ids], dtype=object)
    predictions = {"before": _predict(family, networks.before, x), "after": _predict(family, networks.after, x),
                   "retrain": _predict(family, networks.retrain, x)}
    per_group: dict[str, JsonValue] = {}
    rates: dict[str, list[float]] = {name: [] for name in predictions}
    for value in sorted({str(v) for v in values if v != ""}):
        rows = values == value
        entry: dict[str, JsonValue] = {"rows": int(rows.sum())}
        accuracy = {name: float((p[rows] == labels[rows]).mean()) for name, p in predictions.items()}
        positive_rate = {name: float((p[rows] == positive).mean()) for name, p in predictions.items()}
        for name, rate in positive_rate.items():
            rates[name].append(rate)
        entry["accuracy"] = Figures3(accuracy["before"], accuracy["after"], accuracy["retrain"]).to_json()
        entry["positive_rate"] = Figures3(positive_rate["before"], positive_rate["after"],
                                          positive_rate["retrain"]).to_json()
        per_group[value] = entry
    if not per_group:
        return {"status": "not run", "reason": "no evaluation row has a group value"}

    def gap(name: str) -> float:
        return max(rates[name]) - min(rates[name])

    return {"status": "run", "evaluated_on": evaluation.name, "positive_class_index": positive, "groups": per_group,
            "positive_rate_gap": Figures3(gap("before"), gap("after"), gap("retrain")).to_json()}
