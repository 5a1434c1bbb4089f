"""The `rehearsal` job (issues 11 and 21): after training a model whose unlearning method is
approximate, rehearse erasures of several random draws of subjects in memory and store which
methods and settings came close enough to real retrains, draw after draw
(workers/engine/unlearning/rehearsal.py), so a real request starts with settings known to work. Low priority: created by the training job with a delay (`OBLIVIATE_REHEARSAL_DELAY_SECONDS`).

Its rows are app/unlearning/rehearsal_job.py's. It changes nothing but its own row: every weight
it trains goes to a scratch store in memory, the sampled subjects are never written anywhere, and
the model keeps its version."""

from __future__ import annotations

from app.artifacts.store import ArtifactMissing, scratch
from app.db import session_scope
from app.unlearning import rehearsal_job
from workers.engine.unlearning import rehearsal
from workers.engine.unlearning.context import context_for
from workers.jobs import JobContext, TransientError
from workers.training import begin


def run(context: JobContext) -> None:
    attempt = begin(context)
    with session_scope() as session:
        target = rehearsal_job.target(session, attempt)
    if target is None:
        with session_scope() as session:
            rehearsal_job.skip(session, attempt, "nothing to rehearse: the model has no version or an exact unlearning method")
        return
    context.progress(0.02, "loading data")
    try:
        with scratch():
            ctx = context_for(target.snapshot, (), progress=lambda f, step: context.progress(0.05 + 0.1 * f, step))
            draws = rehearsal.sample_draws(ctx, target.subjects, target.draws)
            if not draws:
                with session_scope() as session:
                    rehearsal_job.skip(session, attempt, "nothing to rehearse: the model trained on fewer than two subjects")
                return
            found = rehearsal.rehearse(ctx, draws, target.methods, seeds=target.retrain_seeds, check=context.check,
                                       progress=lambda f, step: context.progress(0.15 + 0.8 * f, step))
    except ArtifactMissing as exc:
        # An erasure destroyed the version's data meanwhile: rehearse its successor instead.
        raise TransientError("the rehearsed version's artifacts were destroyed; rehearsing the current one") from exc
    context.check()
    with session_scope() as session:
        rehearsal_job.record(session, attempt, target, subjects=found.subjects, forget_records=found.forget_records,
                             retrain_cpu_s=found.retrain_cpu_s, results=found.results,
                             design={"draws": found.draws, "retrain_seeds": found.retrain_seeds,
                                     "retrain_spread": found.spread, "untestable_draws": found.untestable_draws})
