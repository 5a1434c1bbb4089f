"""Repairing an approximate result whose only flaw is a few records the per-record LiRA test
still recognises.

A method that forgets the forget set as a whole can leave single records memorised: on the
benchmark's generalising model fine-tuning, SalUn and SCRUB left 1–3 of about 400 records, a
mislabelled record typically, more confident than any retrain would be (bench/verification.py).
The per-record LiRA test flags them and the result would escalate to a full retrain. Instead, when
every other check passes and the LiRA test's aggregate is within its tolerance, the job runs
`neggrad_plus` on those records alone, each aimed at the loss its OUT references give it
(workers/engine/verification/references.forget_loss_targets), from the method's weights, and
verifies the repaired version again on the whole forget set. It escalates if that does not pass either.

The second verification tests a new model, with every check; α is spent across the two looks
(α/2 each, `job.verified`), and the repair aims at the tuning half of the references while both
looks judge with the confirmation half (`references.split`), so the result is not judged by the
instruments it was aimed at. The repair acts on the records the first look selected, and on
nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.unlearning.types import JsonValue
from workers.engine.verification.lira import MIN_SPREAD_RATIO
from workers.engine.verification.verdicts import Check

# At most this share of the forget records (and at least one) may be flagged for a repair: more
# is no longer a few stragglers, and the method did not work.
MAX_SHARE = 0.05
# The repair's settings: neggrad_plus with per-record targets, at most a tenth of a training, its
# ascent weighed as before the calibrated-gap defaults (it aims at single records, not a gap).
SETTINGS: dict[str, JsonValue] = {"max_cost": 0.1, "alpha": 0.9, "check_every": 10}


def repairable(checks: Sequence[Check]) -> list[int]:
    """The flagged record ids when the LiRA test's flags are the only thing that blocks the
    result: every other forgetting check passed, no utility check failed, the LiRA test's own
    interval is within its tolerance, few records are flagged and none is over-forgotten. Empty
    otherwise."""
    membership = next((c for c in checks if c.name == "per_record_audit"), None)
    if membership is None or membership.interval is None:
        return []
    for found in checks:
        if found is membership:
            continue
        if found.verdict == "fail" or (found.verdict != "pass" and not found.utility):
            return []
    stored = membership.extra.get("flagged")
    flagged = [i for i in stored if isinstance(i, int)] if isinstance(stored, Sequence) else []
    if not flagged or len(flagged) > max(1, int(MAX_SHARE * membership.n)):
        return []
    if membership.interval[1] > membership.tolerance:
        return []
    # Over-forgotten subjects, or a collapsed spread, are no stragglers a further unlearning fixes.
    spread = membership.extra.get("spread_ratio_upper")
    if membership.extra.get("unfamiliar") or (isinstance(spread, (int, float)) and spread < MIN_SPREAD_RATIO):
        return []
    return flagged
