"""The sanity check of an exact erasure, and the operator alarm when it fails
(docs/unlearning-and-verification.md, "Exact erasures and their sanity check").

A retrain or a SISA retrain is exact by construction: the new weights were trained only on the
dataset version without the records. Its verification figures prove nothing beyond that; they
are a sanity check. When one *fails* (evidence, not an inconclusive interval), the construction
cannot be at fault, so something the service relies on is: the lineage (the records the weights
saw are not those the manifest says) or the checks' calibration (the references, the holdout).
That is the operator's problem, not the request's: the request completes as erased, and the
operator is alarmed by a log line (here), the gauge `obliviate_exact_sanity_check_failures` on
/metrics (app/health/figures.py counts the jobs whose entry `failed`) and a notice on the
dashboard. Nothing here names a subject or a record."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from app.db import on_commit
from app.unlearning.types import EXACT_METHODS

log = logging.getLogger("obliviate.unlearning")

NOTICE = ("Operator alarm: the sanity check of this exact erasure failed. The weights were retrained without the "
          "records, so the erasure stands; a failure here means the lineage (which records the weights saw) or the "
          "checks' calibration (references, holdout) is wrong. Investigate the model's lineage and references.")


def verdict(entry: Mapping[str, Any] | None) -> str | None:
    """The verdict of a model entry's verification block (a job's `model` entry), if any."""
    verification = (entry or {}).get("verification")
    verdicts = verification.get("verdicts") if isinstance(verification, Mapping) else None
    found = verdicts.get("verdict") if isinstance(verdicts, Mapping) else None
    return found if isinstance(found, str) else None


def exact(entry: Mapping[str, Any] | None) -> bool:
    return (entry or {}).get("method") in EXACT_METHODS


def failed(entry: Mapping[str, Any] | None) -> bool:
    """Whether this is an exact erasure whose sanity check failed: the alarm's condition."""
    return exact(entry) and verdict(entry) == "fail"


def alarm(session: Session, job_id: uuid.UUID, entry: Mapping[str, Any]) -> bool:
    """Log the operator alarm for the entry when its sanity check failed, once the step that
    records the version commits (a step rolled back and run again logs once); whether it will."""
    if not failed(entry):
        return False
    method, model = str(entry.get("method")), str(entry.get("model"))

    def raise_alarm() -> None:
        log.warning("exact erasure's sanity check failed (job %s, model %s, method %s): the lineage or the checks' "
                    "calibration is wrong", job_id, model, method)

    on_commit(session, raise_alarm)
    return True
