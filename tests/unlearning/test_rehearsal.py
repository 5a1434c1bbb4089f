"""The unlearning rehearsal (issue 11): the job a training run queues for a model whose method is
approximate, what it stores, the rule that picks a job's method and settings from rehearsals,
and the settings an erasure then runs with and names in its certificate."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from tests.dataset_files import artifact_files
from tests.factories import LAX, erase_in_process, model_version, seen_subjects, train_in_process
from tests.worker import execute_queued

pytestmark = pytest.mark.usefixtures("held_batches")
TABULAR = ("finetune", "neggrad_plus", "scrub", "salun")


def _row(model_id=None, *entries, chosen=None):
    from app.models.models import ModelRehearsal

    return ModelRehearsal(id=uuid.uuid4(), model_id=model_id or uuid.uuid4(), results=[
        {"method": m, "settings": s, "passed": p, "cost": c, "verdict": "pass" if p else verdict}
        for m, s, p, c, *given in entries for verdict in [given[0] if given else "fail"]], chosen=chosen)


def _decide(method="finetune", *, explicit=False, own=None, history=()):
    from app.unlearning.method_choice import decide

    return decide(method, explicit=explicit, own=own, history=list(history) + ([own] if own else []),
                  family_methods=TABULAR)


def test_a_chosen_method_becomes_the_rehearsals_cheapest_pass():
    own = _row(None, ("finetune", {}, False, 0.1), ("salun", {"mask_fraction": 0.1}, True, 0.2),
               chosen={"method": "salun", "settings": {"mask_fraction": 0.1}})
    choice = _decide(own=own)
    assert (choice.method, dict(choice.settings), choice.source, choice.rehearsal_id) == (
        "salun", {"mask_fraction": 0.1}, "rehearsal", own.id)


def test_an_explicit_method_is_honoured_with_its_own_passing_settings():
    own = _row(None, ("scrub", {}, True, 0.3), ("scrub", {"rewind": True}, True, 0.2), ("salun", {}, True, 0.1),
               chosen={"method": "salun", "settings": {}})
    choice = _decide("scrub", explicit=True, own=own)
    assert (choice.method, dict(choice.settings), choice.source) == ("scrub", {"rewind": True}, "rehearsal")
    # No passing settings for it: still that method, with its defaults.
    failed = _row(None, ("neggrad_plus", {}, False, 0.1), ("salun", {}, True, 0.1), chosen={"method": "salun", "settings": {}})
    choice = _decide("neggrad_plus", explicit=True, own=failed)
    assert (choice.method, dict(choice.settings), choice.source, choice.rehearsal_id) == (
        "neggrad_plus", {}, "defaults", failed.id)
    # An explicit method ignores the family's history.
    assert _decide("neggrad_plus", explicit=True, history=[failed]).method == "neggrad_plus"


def test_a_method_that_never_passed_on_the_family_is_not_tried_first():
    other = _row(None, ("finetune", {}, False, 0.1), ("finetune", {"epochs": 10}, False, 0.2),
                 ("neggrad_plus", {}, False, 0.1), ("scrub", {}, True, 0.4))
    choice = _decide(history=[other])
    assert choice.method == "scrub" and choice.source == "family_history" and "finetune never passed" in choice.reason
    # No method passed, but one has no history yet: that one.
    untried = _row(None, ("finetune", {}, False, 0.1), ("neggrad_plus", {}, False, 0.1), ("scrub", {}, False, 0.1))
    assert _decide(history=[untried]).method == "salun"
    # The configured method stays while it has passed somewhere, or has no history at all.
    assert _decide(history=[_row(None, ("finetune", {}, False, 0.1)), _row(None, ("finetune", {}, True, 0.1))]).method == "finetune"
    assert _decide(history=[_row(None, ("scrub", {}, False, 0.1))]) .source == "defaults"
    # Its own rehearsal without a pass counts as the family's history too.
    own = _row(None, *[(m, {}, False, 0.1) for m in TABULAR[:3]])
    assert _decide(own=own).method == "salun"


def test_when_every_method_failed_on_the_family_the_job_retrains_at_once():
    history = [_row(None, ("finetune", {}, False, 0.1), ("neggrad_plus", {}, False, 0.1)),
               _row(None, ("scrub", {}, False, 0.1), ("salun", {"mask_fraction": 0.3}, False, 0.1))]
    choice = _decide(history=history)
    assert choice.method == "retrain" and choice.source == "family_history" and "retrained at once" in choice.reason
    assert choice.to_json()["reason"] == choice.reason


def test_inconclusive_candidates_are_no_evidence_against_a_method():
    # Too few forget records for the verdicts to tell: finetune keeps its turn.
    history = [_row(None, ("finetune", {}, False, 0.1, "inconclusive"), ("finetune", {"epochs": 10}, False, 0.2, "inconclusive"),
                    ("neggrad_plus", {}, False, 0.1), ("scrub", {}, False, 0.1), ("salun", {}, False, 0.1))]
    assert _decide(history=history).method == "finetune" and _decide(history=history).source == "defaults"
    history.append(_row(None, ("finetune", {}, False, 0.1, "fail")))
    assert _decide(history=history).method == "retrain"


def test_the_pass_rate_across_draws_outranks_the_cost():
    from app.models.rehearsal_results import best

    lucky = {"method": "finetune", "settings": {}, "passed": True, "pass_rate": 2 / 3, "cost": 0.05}
    steady = {"method": "scrub", "settings": {}, "passed": True, "pass_rate": 1.0, "cost": 0.4}
    dearer = {"method": "salun", "settings": {}, "passed": True, "pass_rate": 1.0, "cost": 0.6}
    failed = {"method": "neggrad_plus", "settings": {}, "passed": False, "pass_rate": 1 / 3, "cost": 0.01}
    assert best([lucky, dearer, steady, failed]) is steady
    assert best([lucky, failed]) is lucky and best([failed]) is None
    assert best([lucky, steady], "finetune") is lucky
    # A row from before the draws: a pass counts as a rate of 1.
    assert best([{"method": "finetune", "settings": {}, "passed": True, "cost": 0.3}, lucky])["cost"] == 0.3


def test_tost_judges_a_gap_against_the_retrains_own_spread():
    from workers.engine.unlearning.rehearsal import equivalent, retrain_spread

    # Retrains 0.02 apart under two seeds, three draws: a spread of about 0.014, 3 degrees of freedom.
    draws = [[{"forget_accuracy": a, "holdout_accuracy": 0.9, "mia_auc": 0.5}, {"forget_accuracy": a + 0.02,
              "holdout_accuracy": 0.9, "mia_auc": 0.5}] for a in (0.8, 0.85, 0.9)]
    spread = retrain_spread(draws)
    assert spread.dof == 3 and abs(spread.sd["forget_accuracy"] - 0.02 / 2 ** 0.5) < 1e-9
    assert spread.sd["holdout_accuracy"] == 0.0
    sd = spread.sd["forget_accuracy"]
    assert equivalent(0.0, 0.05, sd, 2, 3)
    # Inside the margin, but not by more than the retrains' noise allows: not shown equivalent.
    assert not equivalent(0.03, 0.05, sd, 2, 3) and not equivalent(-0.03, 0.05, sd, 2, 3)
    # Without noise, TOST is the bound itself.
    assert equivalent(0.019, 0.02, 0.0, 2, 3) and not equivalent(0.021, 0.02, 0.0, 2, 3)


def _scripted_rehearsal(monkeypatch, script: dict[str, list[str]], draws: int = 3,
                        testable: list[bool] | None = None, full: bool = False):
    """rehearse() with its training and verification replaced: each candidate method's draws
    give the verdicts of `script` in order ("pass" passes the draw), and draw i's no-op control
    finds it testable where `testable[i]` (every draw by default). Returns the rehearsal
    (`full`) or its results by method, and how many draws each method was run on."""
    from types import SimpleNamespace

    import numpy as np

    from workers.engine.unlearning import rehearsal
    from workers.engine.verification import control

    runs: dict[str, int] = {}
    flags = [True] * draws if testable is None else testable
    monkeypatch.setattr(rehearsal, "erased", lambda ctx, keys: SimpleNamespace(forget_ids=np.arange(len(keys)),
                                                                                   old_shards=(), draw=int(keys[0])))
    retrained: list[int] = []
    monkeypatch.setattr(rehearsal, "retrain", lambda ctx, training_seed: retrained.append(ctx.draw))
    monkeypatch.setattr(rehearsal.verification, "verify_outcome", lambda *a: SimpleNamespace(after=None))
    monkeypatch.setattr(rehearsal, "_figures", lambda after: {"forget_accuracy": 0.9, "holdout_accuracy": 0.9,
                                                               "mia_auc": 0.5})
    monkeypatch.setattr(rehearsal, "no_op_control", lambda ctx: {"draw": ctx.draw})
    monkeypatch.setattr(control, "testable", lambda block: flags[block["draw"]])
    monkeypatch.setattr(rehearsal, "GRID", {method: ({},) for method in script})

    def judge(draw, method, settings, spread, retrain_cpu):
        verdict = script[method][runs.get(method, 0)]
        runs[method] = runs.get(method, 0) + 1
        return rehearsal.Judged(verdict, [] if verdict == "pass" else [f"{verdict}: scripted"],
                                {name: 0.0 for name in rehearsal.BOUNDS}, 0.1, 0.01, verdict == "pass")

    def judged(draw, method, settings, spread, retrain_cpu):
        assert flags[draw.ctx.draw], "a candidate was run on an untestable draw"
        return judge(draw, method, settings, spread, retrain_cpu)

    monkeypatch.setattr(rehearsal, "_judge", judged)
    found = rehearsal.rehearse(SimpleNamespace(seed=0), [[str(i)] for i in range(draws)], list(script))
    if full:
        return found, runs, retrained
    return {r["method"]: r for r in found.results}, runs


def test_a_candidate_that_failed_too_many_draws_is_not_run_on_the_rest(monkeypatch):
    from workers.engine.unlearning.rehearsal import SKIPPED

    results, runs = _scripted_rehearsal(monkeypatch, {
        "finetune": ["fail", "fail", "pass"],                 # two fails: it cannot reach 2 of 3
        "neggrad_plus": ["fail", "pass", "pass"],             # still could pass after one fail
        "scrub": ["inconclusive", "inconclusive", "fail"],    # no fail yet: a later one changes its verdict
        "salun": ["pass", "fail", "fail"]})
    assert runs == {"finetune": 2, "neggrad_plus": 3, "scrub": 3, "salun": 3}
    skipped = results["finetune"]
    assert [d["verdict"] for d in skipped["draws"]] == ["fail", "fail", SKIPPED]
    assert skipped["verdict"] == "fail" and not skipped["passed"] and skipped["pass_rate"] == 0.0
    assert all(v is None for v in skipped["draws"][2]["gaps"].values()) and skipped["gaps"]["mia_auc"] == 0.0
    assert results["neggrad_plus"]["passed"] and results["neggrad_plus"]["pass_rate"] == round(2 / 3, 6)
    assert results["scrub"]["verdict"] == "fail" and results["salun"]["verdict"] == "fail"
    # With five draws (4 passes needed), two fails decide it: three draws are skipped.
    results, runs = _scripted_rehearsal(monkeypatch, {"finetune": ["fail", "fail", "pass", "pass", "pass"]}, draws=5)
    assert runs == {"finetune": 2} and len(results["finetune"]["draws"]) == 5


def test_a_candidate_is_not_run_where_the_checks_cannot_see_the_draw(monkeypatch):
    from workers.engine.unlearning.rehearsal import SKIPPED, UNTESTABLE

    # Draw 0's no-op control passes the original: no result could pass there.
    found, runs, retrained = _scripted_rehearsal(monkeypatch, {
        "neggrad_plus": ["pass", "pass"],        # passes the two draws it can: 2 of 3
        "scrub": ["fail", "pass"],               # one testable draw left after a fail: decided
        "salun": ["inconclusive", "inconclusive"]}, testable=[False, True, True], full=True)
    results = {r["method"]: r for r in found.results}
    assert runs == {"neggrad_plus": 2, "scrub": 1, "salun": 2}
    assert found.untestable_draws == 1 and sorted(retrained) == [0, 0, 1, 1, 2, 2]  # the spread uses every draw
    passing = results["neggrad_plus"]
    assert [d["verdict"] for d in passing["draws"]] == [UNTESTABLE, "pass", "pass"]
    assert passing["passed"] and passing["pass_rate"] == round(2 / 3, 6) and passing["cost"] == 0.1
    assert passing["reasons"][0].startswith("the checks cannot see the subjects of 1 of 3 draws")
    assert [d["verdict"] for d in results["scrub"]["draws"]] == [UNTESTABLE, "fail", SKIPPED]
    assert results["scrub"]["verdict"] == "fail" and results["salun"]["verdict"] == "inconclusive"
    assert all(v is None for v in passing["draws"][0]["gaps"].values())


def test_a_rehearsal_too_few_of_whose_draws_are_testable_runs_nothing(monkeypatch):
    from app.unlearning.method_choice import _tally
    from workers.engine.unlearning.rehearsal import SKIPPED, UNTESTABLE

    # Two of three draws must be passed and only one is testable: nothing could pass.
    found, runs, retrained = _scripted_rehearsal(monkeypatch, {"finetune": ["pass"] * 3, "scrub": ["pass"] * 3},
                                                 testable=[False, True, False], full=True)
    assert runs == {} and retrained == [] and found.retrain_cpu_s == 0.0 and found.untestable_draws == 2
    for result in found.results:
        assert [d["verdict"] for d in result["draws"]] == [UNTESTABLE, SKIPPED, UNTESTABLE]
        assert result["verdict"] == "inconclusive" and not result["passed"] and result["pass_rate"] == 0.0
        assert result["cost"] is None and result["cpu_s"] == 0.0 and set(result["gaps"].values()) == {None}
        assert "2 of 3 draws" in result["reasons"][0] and "none was run" in result["reasons"][0]
    # Method choice counts such candidates as never tried: the family's history is not marked.
    assert _tally([found.results]) == ({}, {})
    # With every draw testable the same script runs and passes.
    found, runs, _ = _scripted_rehearsal(monkeypatch, {"finetune": ["pass"] * 3}, full=True)
    assert runs == {"finetune": 3} and found.results[0]["passed"] and found.untestable_draws == 0


def test_a_rehearsal_needs_three_draws_and_two_seeds(settings_env):
    from pydantic import ValidationError

    from app.config import Settings
    from workers.engine.unlearning.rehearsal import rehearse

    with pytest.raises(ValueError, match="at least 3 draws and 2 retrain seeds"):
        rehearse(None, [["a"], ["b"]], ["finetune"])
    with pytest.raises(ValueError, match="at least 3 draws"):
        rehearse(None, [["a"], ["b"], ["c"]], ["finetune"], seeds=1)
    for field, value in (("rehearsal_draws", 2), ("rehearsal_retrain_seeds", 1)):
        with pytest.raises(ValidationError):
            Settings(**{field: value})


def test_certified_removal_is_rehearsed_only_for_the_convex_family():
    from app.families.registry import get_family
    from app.unlearning.method_choice import approximate_methods

    assert approximate_methods(get_family("mlp_classifier")) == TABULAR
    assert approximate_methods(get_family("logistic_regression")) == (*TABULAR, "certified_newton")
    assert approximate_methods(get_family("causal_lm")) == ("gradient_difference", "npo")


def test_the_settings_are_validated_before_a_method_runs():
    from workers.engine.unlearning import base
    from workers.engine.unlearning.rehearsal import GRID

    for method, grid in GRID.items():
        for settings in grid:
            base.parse_method_config(method, dict(settings))
    with pytest.raises(base.MethodConfigError, match="unknown setting"):
        base.parse_method_config("salun", {"mask": 0.1})
    with pytest.raises(base.MethodConfigError, match="invalid settings"):
        base.parse_method_config("salun", {"mask_fraction": 2.0})


@pytest.mark.usefixtures("control_sees_the_subjects")
def test_rehearsal_stores_its_candidates_and_the_next_erasure_uses_the_chosen_settings(
        client, admin, settings_env, data_dir, monkeypatch):
    from app.db import session_scope
    from app.jobs.models import Job
    from app.models.models import ModelRehearsal, ModelVersion
    from workers.engine.unlearning import rehearsal

    # The policy chooses the approximate method (more rows than a small model), references audit it.
    settings_env(SMALL_MODEL_ROWS="100", AUDIT_REFERENCES="4", REHEARSAL_DELAY_SECONDS="3600",
                 REHEARSAL_SUBJECTS="6", **LAX)
    train_in_process(client, admin, "rehearsed", params={"hidden": [16], "epochs": 10, "learning_rate": 0.01})
    with session_scope() as session:
        (job,) = session.scalars(select(Job).where(Job.kind == "rehearsal")).all()
        assert job.status == "queued" and job.not_before is not None  # delayed, low priority
    assert client.get("/v1/models/rehearsed/rehearsal", headers=admin).status_code == 404
    # Wide bounds, so that which candidates pass depends on the service's verdicts alone.
    monkeypatch.setattr(rehearsal, "BOUNDS", {name: 1.0 for name in rehearsal.BOUNDS})
    files = artifact_files(data_dir)
    assert execute_queued("rehearsal") == ["completed"]
    assert artifact_files(data_dir) == files  # nothing it trained was stored
    with session_scope() as session:
        (row,) = session.scalars(select(ModelRehearsal)).all()
        assert session.scalars(select(ModelVersion)).all()[0].version == 1 and len(session.scalars(select(ModelVersion)).all()) == 1
        job = session.scalars(select(Job).where(Job.kind == "rehearsal")).one()
        assert job.result["rehearsal_id"] == str(row.id) and job.result["candidates"] == len(row.results)
        # Three draws of subjects, each retrained under two seeds, whose spread is reported.
        assert (job.result["draws"], job.result["retrain_seeds"]) == (3, 2)
        assert set(job.result["retrain_spread"]["sd"]) == set(rehearsal.BOUNDS) and job.result["retrain_spread"]["dof"] == 3
    shown = client.get("/v1/models/rehearsed/rehearsal", headers=admin).json()
    assert shown["id"] == str(row.id) and shown["subjects"] == 6 and shown["model_version"] == 1
    assert shown["forget_records"] > 3 * 6 and shown["retrain_cpu_s"] > 0 and shown["draws"] == 3
    assert [(r["method"], r["settings"]) for r in shown["results"]] == rehearsal.candidates(TABULAR)
    for entry in shown["results"]:
        assert entry["verdict"] in ("pass", "fail", "inconclusive") and entry["cost"] >= 0
        assert set(entry["gaps"]) == {"forget_accuracy", "holdout_accuracy", "mia_auc"}
        assert len(entry["draws"]) == 3 and entry["pass_rate"] == round(sum(d["passed"] for d in entry["draws"]) / 3, 6)
        assert entry["passed"] == (entry["pass_rate"] >= 2 / 3) == (entry["verdict"] == "pass")
        assert all(d["passed"] == (d["verdict"] == "pass") for d in entry["draws"])
    assert {r["mask_fraction"] for r in (e["settings"] for e in shown["results"] if e["method"] == "salun")} == {0.1, 0.3, 0.5}
    passing = [r for r in shown["results"] if r["passed"]]
    assert passing, shown["results"]  # lax tolerances: the service's verdicts pass
    chosen = min(passing, key=lambda r: (-r["pass_rate"], r["cost"]))
    assert shown["chosen"] == {"method": chosen["method"], "settings": chosen["settings"]}
    assert not any(key in str(shown) for key in _subject_keys())

    request_id = erase_in_process(client, admin, seen_subjects(1)[0])
    version = model_version(client, admin, "rehearsed", 2)
    assert version["origin"]["requested_method"] == shown["chosen"]["method"]
    certificate = client.get(f"/v1/erasure-requests/{request_id}/certificate", headers=admin).json()
    named = certificate["certificate"]["models"][0]["method_settings"]
    assert named["method"] == shown["chosen"]["method"] and named["source"] == "rehearsal"
    assert named["rehearsal_id"] == str(row.id) and shown["chosen"]["settings"].items() <= named["settings"].items()
    job = client.get(f"/v1/jobs/{certificate['certificate']['models'][0]['job_id']}", headers=admin).json()
    assert job["result"]["model"]["method_settings"] == named
    progress = client.get(f"/v1/erasure-requests/{request_id}", headers=admin).json()["progress"]
    assert progress["verification"]["rehearsed"]["method_settings"] == named


def _subject_keys() -> list[str]:
    from app.db import session_scope
    from app.datasets.models import SubjectRecords

    with session_scope() as session:
        return list(session.scalars(select(SubjectRecords.subject_key)))[:50]


def test_a_language_model_rehearses_its_own_methods(client, admin, settings_env, monkeypatch):
    from app.db import session_scope
    from app.models.models import ModelRehearsal
    from workers.engine.unlearning import rehearsal
    from workers.engine.verification import control

    settings_env(AUDIT_REFERENCES="2", REHEARSAL_DELAY_SECONDS="0", REHEARSAL_SUBJECTS="3")
    # One setting per method (the grid is checked above): 3 draws × (2 retrains + 2 candidates).
    monkeypatch.setattr(rehearsal, "GRID", {**rehearsal.GRID, "gradient_difference": ({},), "npo": ({},)})
    # The no-op control judges subjects too: the original's checks on 3 subjects' texts are too
    # wide to fail, so no draw is testable, and nothing is retrained or run: every candidate is
    # inconclusive and says why.
    train_in_process(client, admin, "rehearsed-lm", family="causal_lm", unlearning_method="npo")
    assert execute_queued("rehearsal", close_windows=False) == ["completed"]
    with session_scope() as session:
        row = session.scalars(select(ModelRehearsal)).one()
    assert row.subjects == 3 and row.forget_records > 0 and row.retrain_cpu_s == 0.0
    assert [(r["method"], r["settings"]) for r in row.results] == [("gradient_difference", {}), ("npo", {})]
    assert all([d["verdict"] for d in r["draws"]] == [rehearsal.UNTESTABLE] * 3 for r in row.results)
    assert all(r["verdict"] == "inconclusive" and r["cost"] is None and r["reasons"][0].startswith(
        "the checks cannot see the subjects of 3 of 3 draws") for r in row.results)
    assert row.chosen is None
    # Taken as testable, the candidates run, and language-model candidates are judged by the
    # statistical verdict block, as tabular ones: on the few texts of 3 subjects no interval is
    # narrow enough to pass (the AUCs' alone are wider than their tolerance), so every candidate
    # fails or is inconclusive, each blocking check says why, and nothing is chosen.
    monkeypatch.setattr(control, "testable", lambda block: True)
    train_in_process(client, admin, "rehearsed-lm-seen", family="causal_lm", unlearning_method="npo")
    assert execute_queued("rehearsal", close_windows=False) == ["completed"]
    with session_scope() as session:
        (row,) = [r for r in session.scalars(select(ModelRehearsal)) if r.retrain_cpu_s > 0]
    assert all(len(r["draws"]) == 3 and rehearsal.UNTESTABLE not in [d["verdict"] for d in r["draws"]]
               for r in row.results)
    assert all(set(r["gaps"]) == {"forget_accuracy", "holdout_accuracy", "mia_auc"} for r in row.results)
    assert all(r["verdict"] in ("fail", "inconclusive") and not r["passed"] for r in row.results)
    assert all(r["reasons"] and all(x.startswith(("fail: ", "inconclusive: ")) for x in r["reasons"])
               for r in row.results), [r["reasons"] for r in row.results]
    assert any("membership-inference AUC" in x for r in row.results for x in r["reasons"])
    assert row.chosen is None


def test_the_scratch_store_reads_through_and_keeps_its_writes_in_memory(database_url):
    from app.artifacts.store import ArtifactMissing, get_store, scratch

    real = get_store()
    stored = real.put_bytes(b"a live artifact")
    with scratch() as store:
        assert get_store() is store and store.get_bytes(stored) == b"a live artifact"
        made = get_store().put_bytes(b"trained by a rehearsal")
        assert store.get_bytes(made) == b"trained by a rehearsal" and not real.exists(made)
    assert get_store() is real and not real.exists(made)
    with pytest.raises(ArtifactMissing):
        real.get_bytes(made)
