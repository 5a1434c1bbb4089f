"""Writes docs/figures/forest-plot.svg, the example forest plot of the verification docs: the
checks of one unlearned version, computed by the service's own check functions
(workers/engine/verification/checks.py) on generated correctness and losses, and drawn by the
dashboard's `forest_plot` (app/dashboard/charts.py), exactly as a request's page draws them.

    PYTHONPATH=$PWD python examples/forest_plot.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.dashboard.charts import forest_plot
from workers.engine.verification.checks import (
    Policy, accuracy_gap_check, holdout_drop_check, mia_auc_check, summary,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures" / "forest-plot.svg"


def main() -> None:
    rng = np.random.default_rng(4)
    policy = Policy()
    # 900 forget records of an unlearned model, 400 held-out records: accuracy near the
    # holdout's, losses a little lower (the forget set is slightly more familiar).
    forget_correct = (rng.random(900) < 0.90).astype(np.float64)
    holdout_before = (rng.random(400) < 0.91).astype(np.float64)
    holdout_after = np.where(rng.random(400) < 0.02, 0.0, holdout_before)
    forget_losses = rng.gamma(2.0, 0.14, 120)
    holdout_losses = rng.gamma(2.0, 0.15, 400)
    checks = [accuracy_gap_check(forget_correct, holdout_after, policy),
              mia_auc_check(forget_losses, holdout_losses, policy),
              holdout_drop_check(holdout_before, holdout_after, policy)]
    plot = forest_plot(summary(checks, policy), "Example: the checks of one unlearned version, each estimate and "
                                                "its 90% interval against its tolerance band")
    assert plot is not None
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(plot.svg + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(plot.rows)} checks, " + ", ".join(f"{r.name} {r.verdict}" for r in plot.rows))


if __name__ == "__main__":
    main()
