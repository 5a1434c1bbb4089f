"""The verification policy in force (app/config.py) and the verification block of a job: the
engine's checks (workers/engine/forgetting.py) on one new model version, with its references."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from app.config import get_settings
from workers.engine import forgetting, verdicts
from workers.engine.forgetting import Policy


def policy_from_settings() -> Policy:
    settings = get_settings()
    tolerances = settings.verification_tolerances()
    return Policy(
        alpha=settings.verification_alpha, forget_gap=tolerances["forget_gap"], mia_auc=tolerances["mia_auc"],
        audit=tolerances["audit"], holdout_drop=tolerances["holdout_drop"],
        record_level=settings.audit_record_level, delta=settings.audit_delta,
    )


def verification_block(family, *, before, after, forget: tuple, holdout: tuple | None, forget_ids: np.ndarray,
                       forget_keys: list[str], method: str, exact: bool, pool: list[dict] | None = None,
                       forget_shards: np.ndarray | None = None, pool_expected: int = 0) -> dict[str, Any]:
    """The verdicts of one new version, as stored in the job, the certificate and the request.

    `pool` holds the model's live references (workers/references.py), `forget_shards` the shard
    of each forget record for a SISA model; with neither, only the population checks run.
    `pool_expected` is the pool size the model should have: with fewer live references the
    audit cannot run and the block says so (an approximate result then escalates)."""
    policy = policy_from_settings()
    inputs, reference, note = None, "holdout", None
    has_holdout = holdout is not None and int(holdout[1].shape[0]) > 0
    if forget_shards is not None and len(after) > 1 and has_holdout:
        inputs = forgetting.shard_audit_inputs(family, after, forget, forget_shards, holdout)
        reference = "shards"
    elif pool and has_holdout:
        from workers import references

        inputs = forgetting.reference_audit_inputs(family, after, [r["network"] for r in pool], forget,
                                                   references.out_mask(pool, forget_keys), holdout)
        reference = "references"
    if pool_expected and (pool is None or len(pool) < pool_expected):
        note = (f"{0 if pool is None else len(pool)} of {pool_expected} reference models are live (the others held "
                f"erased subjects and await their refill job)")
    checks = forgetting.forgetting_checks(family, after, before, forget, holdout, policy, audit_inputs=inputs,
                                          forget_ids=forget_ids)
    if pool_expected and inputs is None and forget_shards is None:
        checks.append(verdicts.check("per_record_audit", label="per-record audit", attack="offline_lira",
                                     test="clopper_pearson", estimate=None, interval=None, alpha=policy.alpha,
                                     tolerance=policy.audit, two_sided=False, n=len(forget_ids), reference="references",
                                     unavailable=f"too few references: {note or 'no holdout to calibrate against'}"))
    if note:
        # Said in the audit's own verdict: with part of the pool gone, an audit that still ran rests
        # on fewer references, and one that could not run says why.
        checks = [replace(c, reason=f"{c.reason} ({note})") if c.name == "per_record_audit" else c for c in checks]
    block = forgetting.summary(checks, policy)
    audit = next((c for c in checks if c.name == "per_record_audit"), None)
    block.update({
        "method": method, "exact": exact,
        # An exact method records its verdicts but never escalates on them.
        "escalates": not exact and block["verdict"] != "pass",
        "attacks": sorted({c.attack for c in checks if c.attack}),
        "records": len(forget_ids), "reference": reference,
        "epsilon_lower_bound": audit.extra.get("epsilon_lower_bound") if audit else None,
        "tolerances": {"forget_gap": policy.forget_gap, "mia_auc": policy.mia_auc, "audit": policy.audit,
                       "holdout_drop": policy.holdout_drop},
        "references": {"live": len(pool or []), "expected": pool_expected, "ids": [r["id"] for r in pool or []],
                       **({"note": note} if note else {})},
    })
    return block
