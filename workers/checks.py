"""The verification policy in force (app/config.py) for the engine's checks."""

from __future__ import annotations

from app.config import get_settings
from workers.engine.forgetting import Policy


def policy_from_settings() -> Policy:
    settings = get_settings()
    tolerances = settings.verification_tolerances()
    return Policy(
        alpha=settings.verification_alpha, forget_gap=tolerances["forget_gap"], mia_auc=tolerances["mia_auc"],
        audit=tolerances["audit"], holdout_drop=tolerances["holdout_drop"],
        record_level=settings.audit_record_level, delta=settings.audit_delta,
    )
