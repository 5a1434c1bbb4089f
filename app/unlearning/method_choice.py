"""Which method, with which settings, an unlearning job starts with (issue 11: the rehearsal).

The model's policy (`choose_method`) names a method. When it is approximate, the model's
rehearsals refine it (app/models/rehearsal_results.py):

- a method chosen by the policy becomes the candidate chosen by the model's latest rehearsal
  (the highest pass rate across its draws of subjects, the cheapest among equals), with its
  settings;
- a method set on the model is honoured, with the settings that passed for it, if any;
- a chosen method without a passing rehearsal of its own model follows the family's history
  (the client's rehearsals of models of the same family, this one's included): a method with
  rehearsed candidates and no pass is not tried first. The configured method stays unless it
  never passed; else the first method that passed on the family, else the first without history;
  when every approximate method has history and none ever passed, the job retrains at once.
  An inconclusive candidate (too few forget records for the verdicts to tell) is no evidence
  either way and counts as no history: only a pass, a fail, or a pass too far from the retrain do.

The choice is plain data (no torch): the worker validates the settings with the method's config
(workers/engine/unlearning/base.py, `parse_method_config`) before it runs anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.config import get_settings
from app.families.registry import FamilySpec, get_family
from app.models import rehearsal_results as rehearsal_service
from app.models.models import Model, ModelRehearsal
from app.models.schemas import TABULAR_METHODS
from app.unlearning.types import EXACT, JsonValue, MethodSettings

# Where a job's settings come from.
REHEARSAL, DEFAULTS, FAMILY_HISTORY = "rehearsal", "defaults", "family_history"


def choose_method(model: Model, rows: int) -> str:
    """The model's own method, else SISA for a SISA model, a retrain for a small one, else the
    configured approximate method."""
    if model.unlearning_method:
        return model.unlearning_method
    if model.sisa:
        return "sisa"
    if rows <= get_settings().small_model_rows:
        return "retrain"
    method = get_settings().approximate_method
    # A language model has approximate methods of its own (OBLIVIATE_APPROXIMATE_METHOD names a
    # tabular one by default): the first one its family declares.
    supported = get_family(model.family).methods
    if supported is not None and method not in supported:
        return next(m for m in supported if m not in ("retrain", "sisa"))
    return method


def reference_pool_size(model: Model, rows: int) -> int:
    """K reference models for the per-record audit: OBLIVIATE_AUDIT_REFERENCES (rounded down to
    pairs) when the model's unlearning method, set or chosen, is approximate; 0 for exact methods
    and for SISA models, whose shards are their references."""
    size = get_settings().audit_references
    if size <= 0 or model.sisa or choose_method(model, rows) in EXACT:
        return 0
    return size - size % 2


def approximate_methods(spec: FamilySpec) -> tuple[str, ...]:
    """The family's approximate methods, in its declared order; certified removal only for a
    convex family (the linear one), where it applies."""
    supported = spec.methods or TABULAR_METHODS
    return tuple(m for m in supported if m not in EXACT and (m != "certified_newton" or spec.convex))


def choose(session: Session, model: Model, method: str) -> MethodSettings:
    """The job's choice, from the policy's `method` and the rehearsals."""
    if method in EXACT:
        return MethodSettings(method)
    own = rehearsal_service.latest(session, model.id)
    history = rehearsal_service.of_family(session, model.client, model.family)
    return decide(method, explicit=model.unlearning_method is not None, own=own, history=history,
                  family_methods=approximate_methods(get_family(model.family)))


def decide(method: str, *, explicit: bool, own: ModelRehearsal | None, history: Sequence[ModelRehearsal],
           family_methods: Sequence[str]) -> MethodSettings:
    """The rule itself, on rows (kept apart from the queries so each case can be tested)."""
    if own is not None:
        if explicit:
            found = rehearsal_service.best(own.results, method)
            if found is not None:
                return MethodSettings(method, _settings(found), REHEARSAL, own.id)
            return MethodSettings(method, {}, DEFAULTS, own.id)
        if own.chosen is not None:
            return MethodSettings(str(own.chosen["method"]), _settings(own.chosen), REHEARSAL, own.id)
    if explicit:
        return MethodSettings(method)
    tried, passed = _tally(r.results for r in history)
    never = {m for m in family_methods if tried.get(m, 0) > 0 and passed.get(m, 0) == 0}
    if method not in never:
        return MethodSettings(method)
    for pick in [m for m in family_methods if passed.get(m, 0) > 0] + [m for m in family_methods if m not in tried]:
        return MethodSettings(pick, {}, FAMILY_HISTORY,
                            reason=f"{method} never passed a rehearsal of this family; {pick} is tried first")
    return MethodSettings("retrain", {}, FAMILY_HISTORY,
                        reason="no approximate method ever passed a rehearsal of this family: retrained at once")


def _tally(results: Iterable[Sequence[Mapping[str, Any]]]) -> tuple[dict[str, int], dict[str, int]]:
    tried: dict[str, int] = {}
    passed: dict[str, int] = {}
    for entries in results:
        for entry in entries:
            if entry.get("verdict") == "inconclusive":
                continue
            name = str(entry.get("method"))
            tried[name] = tried.get(name, 0) + 1
            passed[name] = passed.get(name, 0) + (1 if entry.get("passed") else 0)
    return tried, passed


def _settings(entry: Mapping[str, Any]) -> dict[str, JsonValue]:
    settings = entry.get("settings") or {}
    return dict(settings) if isinstance(settings, Mapping) else {}
