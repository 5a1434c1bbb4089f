"""Does a new model version still remember the forget records? The statistical checks and their
verdicts, for every family.

- `verdicts.py`: the decision rule (estimate, interval, tolerance → pass | fail | inconclusive);
- `intervals.py`: the confidence intervals the checks compute;
- `checks.py`: the checks of a tabular model and the verification block stored in the job, the
  certificate and the request;
- `scores.py`: what they are computed from: correctness, losses and the LiRA test's scores;
- `text_checks.py`: a language model's per-record figures and its checks;
- `lira.py`: the per-record membership test (offline LiRA) and its ε lower bound;
- `references.py`: the reference models LiRA compares with.

The unlearning job calls them from `workers/engine/unlearning/verification.py`.
"""
