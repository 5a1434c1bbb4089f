"""The no-op control: the same checks run on the model *before* unlearning, against the same
references and holdout, and the one rule that decides whether an approximate result may be
certified (docs/unlearning-and-verification.md, "Verification verdicts").

A check that passes the untouched original cannot tell an erased model from one that never
unlearned: with the original fed in as a method's output, the tolerances alone certified it in
5 of 12 seeds on the generalising benchmark case. So an approximate result is certified only when
the original *fails* some forgetting check (the checks can see these subjects; the forget set is
*testable*) and the result passes every check. Where the original passes, the checks have no power
for this forget set, and the job takes the exact path instead.

The job (`workers/engine/unlearning/job.py`), the rehearsal and `bench/verification.py` all judge
through `blocking`.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.unlearning.types import JsonObject, JsonValue
from workers.engine.verification.checks import stored_checks

# The method name the control's verification block carries.
CONTROL_METHOD = "no_op_control"

NO_POWER = ("the checks have no power for this forget set: the model before unlearning already passes them, "
            "so a passing approximate result would prove nothing; the exact path removes the records instead")
NO_CONTROL = "no no-op control was computed, so the checks' power for this forget set is unknown"


def testable(control: Mapping[str, JsonValue] | None) -> bool:
    """Whether the checks can see these subjects: some forgetting check fails on the original.
    A utility check is no evidence (the original costs nothing against itself), and an
    inconclusive one shows no power either."""
    return any(c.verdict == "fail" and not c.utility for c in stored_checks(control))


def blocking(control: Mapping[str, JsonValue] | None, result: Mapping[str, JsonValue] | None) -> list[str]:
    """Why an approximate result with verification block `result` may not be certified, given the
    control's block (empty: certified). The control's own reason comes first."""
    found: list[str] = []
    if control is None:
        found.append(NO_CONTROL)
    elif not testable(control):
        found.append(NO_POWER)
    return found + verdict_reasons(result)


def verdict_reasons(result: Mapping[str, JsonValue] | None) -> list[str]:
    """Why a verification block did not pass (empty: it passed)."""
    block = result or {}
    if block.get("verdict") == "pass":
        return []
    reasons = block.get("reasons")
    return [str(r) for r in reasons] if isinstance(reasons, list) and reasons else ["no verdicts were computed"]


def entry(control: Mapping[str, JsonValue]) -> JsonObject:
    """The control as the job's ledger and the certificate keep it (key `no_op_control`): its
    verification block, whether the forget set is testable, and in words what that means."""
    power = testable(control)
    return {**dict(control), "testable": power,
            "meaning": ("the original fails the checks: they can see these subjects" if power else NO_POWER)}
