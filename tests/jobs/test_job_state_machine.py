"""The job life cycle as a state machine (docs/architecture.md, "The row is the job"): workers claim, renew, finish, give back and
crash; leases and backoffs run out; the sweeper re-queues; messages arrive twice. Hypothesis
drives random interleavings against the real job functions and database (PostgreSQL in the
services pass), and a model predicts each outcome.

A worker's "effect" (what a real job commits with its result: a model version, a dataset
version) is an audit event written in the same transaction as its fenced completion, so a
stale worker's effect must vanish with its rollback."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

MAX_ATTEMPTS = 3
# Leases lost (taken over after expiry, or swept) before the job fails as out of memory.
MAX_LOST_LEASES = 2
LEASE = 600.0  # long enough that only the clock rule ends a lease, however slow the machine
WORKERS = ("w1", "w2", "w3")
LEGAL = {("queued", "running"), ("running", "completed"), ("running", "failed"), ("running", "queued")}


class JobMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self):
        super().__init__()
        from app.audit.models import AuditEvent
        from app.db import session_scope, utcnow
        from app.jobs import service as job_service
        from app.jobs.models import Job
        from workers import jobs as worker_jobs

        self.AuditEvent, self.Job, self.session_scope, self.utcnow = AuditEvent, Job, session_scope, utcnow
        self.job_service, self.worker_jobs = job_service, worker_jobs
        SENT.clear()
        # The model: job id → what must be true of its row; worker → (job id, attempt) it believes it holds.
        self.model: dict[uuid.UUID, dict] = {}
        self.holding: dict[str, tuple[uuid.UUID, int]] = {}
        self.expected_sends: list[uuid.UUID] = []
        self.seen: dict[uuid.UUID, tuple] = {}

    # Helpers.

    def _row(self, job_id):
        with self.session_scope() as session:
            job = session.get(self.Job, job_id)
            return job.status, job.attempt, job.result, job.finished_at

    def _effects(self, job_id) -> int:
        from sqlalchemy import func, select

        with self.session_scope() as session:
            query = select(func.count()).select_from(self.AuditEvent).where(self.AuditEvent.stream == f"job:{job_id}")
            return session.scalar(query)

    def _set(self, job_id, **values) -> None:
        with self.session_scope() as session:
            session.execute(self.Job.__table__.update().where(self.Job.id == job_id).values(**values))

    def _running(self) -> list:
        # In submission order, not sorted by id: ids are random, and a choice among jobs must
        # pick the same job when hypothesis replays or shrinks a run.
        return [j for j, s in self.model.items() if s["status"] == "running"]

    def _owner(self, worker: str) -> bool:
        """Does the model say this worker's belief is still true?"""
        job_id, attempt = self.holding[worker]
        state = self.model[job_id]
        return state["status"] == "running" and state["attempt"] == attempt

    def _claimable(self, job_id) -> bool:
        state = self.model[job_id]
        waiting = state["status"] == "queued" and not state["backoff"]
        abandoned = state["status"] == "running" and state["expired"] and state["lost"] + 1 < MAX_LOST_LEASES
        return (waiting or abandoned) and state["attempt"] < MAX_ATTEMPTS

    def _claim(self, worker: str, job_id) -> None:
        expected = self._claimable(job_id)
        with self.session_scope() as session:
            attempt = self.job_service.claim(session, job_id, LEASE)
        assert (attempt is not None) == expected, (self.model[job_id], attempt)
        if attempt is not None:
            state = self.model[job_id]
            assert attempt == state["attempt"] + 1
            if state["status"] == "running":
                state["lost"] += 1
            state.update(status="running", attempt=attempt, expired=False, backoff=False)
            self.holding[worker] = (job_id, attempt)

    # Rules.

    @rule(target=jobs)
    def submit(self):
        with self.session_scope() as session:
            job = self.job_service.create(session, client="state-machine", kind="training", model_id=None, payload={})
            job_id = job.id
        self.model[job_id] = {"status": "queued", "attempt": 0, "expired": False, "backoff": False, "effects": 0,
                               "lost": 0}
        self.expected_sends.append(job_id)
        return job_id

    @precondition(lambda self: len(self.holding) < len(WORKERS))
    @rule(job_id=jobs, data=st.data())
    def claim(self, job_id, data):
        worker = data.draw(st.sampled_from([w for w in WORKERS if w not in self.holding]))
        self._claim(worker, job_id)

    @precondition(lambda self: len(self.holding) < len(WORKERS) and self._running())
    @rule(data=st.data())
    def duplicate_delivery(self, data):
        """The message of a running job reaches a second worker (a redelivery after a lost ack)."""
        job_id = data.draw(st.sampled_from(self._running()))
        worker = data.draw(st.sampled_from([w for w in WORKERS if w not in self.holding]))
        self._claim(worker, job_id)

    @precondition(lambda self: self.holding)
    @rule(data=st.data())
    def crash(self, data):
        """The worker dies: it forgets its job and never writes again; its lease stays until it expires."""
        del self.holding[data.draw(st.sampled_from(sorted(self.holding)))]

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def lease_expires(self, data):
        job_id = data.draw(st.sampled_from(self._running()))
        self._set(job_id, lease_until=self.utcnow() - timedelta(seconds=1))
        self.model[job_id]["expired"] = True

    @precondition(lambda self: any(s["backoff"] for s in self.model.values()))
    @rule(data=st.data())
    def backoff_ends(self, data):
        job_id = data.draw(st.sampled_from([j for j, s in self.model.items() if s["backoff"]]))
        self._set(job_id, not_before=self.utcnow() - timedelta(seconds=1))
        self.model[job_id]["backoff"] = False

    @precondition(lambda self: self.holding)
    @rule(data=st.data())
    def renew(self, data):
        worker = data.draw(st.sampled_from(sorted(self.holding)))
        job_id, attempt = self.holding[worker]
        owner = self._owner(worker)
        try:
            with self.session_scope() as session:
                self.job_service.renew(session, job_id, attempt, LEASE)
        except self.job_service.LeaseLost:
            assert not owner, "the owner's heartbeat was refused"
            del self.holding[worker]
            return
        assert owner, "a stale worker renewed a lease"
        self.model[job_id]["expired"] = False

    @precondition(lambda self: self.holding)
    @rule(data=st.data())
    def complete(self, data):
        """The job's last transaction: its effect and the fenced completion, committed together."""
        from app.audit import service as audit_service

        worker = data.draw(st.sampled_from(sorted(self.holding)))
        owner = self._owner(worker)
        job_id, attempt = self.holding.pop(worker)
        try:
            with self.session_scope() as session:
                audit_service.append(session, f"job:{job_id}", "job.effect", f"worker:{worker}", {"attempt": attempt})
                self.job_service.complete(session, job_id, attempt, {"by": worker, "attempt": attempt})
        except self.job_service.LeaseLost:
            assert not owner, "the owner's completion was refused"
            return
        assert owner, "a stale worker completed a job"
        self.model[job_id].update(status="completed", effects=self.model[job_id]["effects"] + 1)

    @precondition(lambda self: self.holding)
    @rule(data=st.data(), permanent=st.booleans())
    def give_up(self, data, permanent):
        """A transient error gives the job back with a backoff (or fails it when out of attempts);
        any other error fails it. Both through the worker's own functions."""
        from workers.jobs import TransientError

        worker = data.draw(st.sampled_from(sorted(self.holding)))
        owner = self._owner(worker)
        job_id, attempt = self.holding.pop(worker)
        if permanent:
            outcome = self.worker_jobs._fail(job_id, attempt, RuntimeError("boom"))
        else:
            outcome = self.worker_jobs._give_back(job_id, attempt, TransientError("flaky"))
        if not owner:
            assert outcome == "lease-lost", outcome
            return
        state = self.model[job_id]
        if permanent or attempt >= MAX_ATTEMPTS:
            assert outcome == "failed", outcome
            state["status"] = "failed"
        else:
            assert outcome == "retry", outcome
            # Pushed far out, so that only the clock rule ends the backoff however slow the run.
            self._set(job_id, not_before=self.utcnow() + timedelta(hours=1))
            state.update(status="queued", backoff=True, sent=False)

    @rule()
    def sweep(self):
        for job_id, state in self.model.items():
            if state["status"] == "running" and state["expired"]:
                state["lost"] += 1
                if state["lost"] >= MAX_LOST_LEASES or state["attempt"] >= MAX_ATTEMPTS:
                    state["status"] = "failed"
                else:
                    state.update(status="queued", expired=False)
                    self.expected_sends.append(job_id)
            elif state["status"] == "queued" and not state["backoff"] and state.get("sent") is False:
                self.expected_sends.append(job_id)  # its message was never sent after the backoff
        for state in self.model.values():
            if state["status"] == "queued" and not state["backoff"]:
                state["sent"] = True
        self.worker_jobs.sweep_expired()

    # Invariants, checked after every step.

    @invariant()
    def rows_follow_the_model(self):
        for job_id, state in self.model.items():
            status, attempt, result, finished = self._row(job_id)
            before = self.seen.get(job_id)
            if before is not None:
                assert attempt >= before[1], "attempt decreased"
                assert before[0] == status or (before[0], status) in LEGAL, f"illegal {before[0]} → {status}"
                if before[0] == "completed":
                    assert (status, attempt, result, finished) == before, "a completed job changed"
            self.seen[job_id] = (status, attempt, result, finished)
            assert (status, attempt) == (state["status"], state["attempt"]), (job_id, state, status, attempt)

    @invariant()
    def at_most_one_effect(self):
        for job_id, state in self.model.items():
            effects = self._effects(job_id)
            assert effects <= 1, f"job {job_id} has {effects} effects"
            assert effects == state["effects"] == (1 if state["status"] == "completed" else 0)

    @invariant()
    def messages_as_predicted(self):
        assert sorted(SENT, key=str) == sorted(self.expected_sends, key=str)

    def teardown(self):
        if self.model:
            with self.session_scope() as session:
                session.execute(self.Job.__table__.delete().where(self.Job.id.in_(list(self.model))))


SENT: list[uuid.UUID] = []


@pytest.fixture
def machine_env(database_url, monkeypatch):
    from app import config
    from app.jobs import service as job_service

    monkeypatch.setenv("OBLIVIATE_JOB_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    monkeypatch.setenv("OBLIVIATE_JOB_MAX_LOST_LEASES", str(MAX_LOST_LEASES))
    config.reset_settings()
    # Enqueueing after commit is recorded instead of reaching a broker.
    monkeypatch.setattr(job_service, "send", lambda job_id: SENT.append(job_id))
    yield
    monkeypatch.undo()
    config.reset_settings()


def test_job_state_machine(machine_env):
    run_state_machine_as_test(JobMachine, settings=settings(
        max_examples=50, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
