"""An exact erasure whose sanity check fails (issue 21, item 7): the erasure stands, and the
operator is alarmed by a Prometheus counter, a log line and a notice on the dashboard, never by a
red badge on the request (app/unlearning/sanity.py)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from tests.dashboard.helpers import sign_in
from tests.factories import batch_request, seen_subjects, train_in_process
from tests.worker import execute_queued, plan_approved

pytestmark = pytest.mark.usefixtures("held_batches")


@pytest.fixture
def trained_records_as_holdout(monkeypatch):
    """The checks' calibration broken on purpose: the records they take for unseen data are records
    the retrain trained on. A forget set the new weights never saw then looks less familiar, and
    less accurately predicted, than that 'holdout', and the sanity check of an exact retrain fails."""
    from workers.engine.unlearning import verification
    from workers.engine.unlearning.context import retain_sample

    real = verification._verdicts

    def miscalibrated(ctx, outcome, before, after, forget, holdout_ids, alpha):
        return real(ctx, outcome, before, after, forget, np.sort(retain_sample(ctx)), alpha)

    monkeypatch.setattr(verification, "_verdicts", miscalibrated)


def _alarms(client, method: str) -> int:
    """The gauge on /metrics, read from the database at scrape time."""
    found = re.search(rf'^obliviate_exact_sanity_check_failures\{{method="{method}"\}} ([0-9.]+)$',
                      client.get("/metrics").text, re.M)
    assert found, "the gauge is always reported"
    return int(float(found.group(1)))


@pytest.mark.usefixtures("trained_records_as_holdout")
def test_a_failed_sanity_check_of_an_exact_erasure_alarms_the_operator_not_the_request(
        client, admin, settings_env, caplog):
    from app.unlearning.sanity import NOTICE

    # No tolerance on the attack AUC and the accuracy gap, so that the miscalibration is evidence
    # as soon as an interval (clustered by subject) excludes zero.
    settings_env(AUDIT_REFERENCES="0", TOLERANCE_MIA_AUC="0", TOLERANCE_FORGET_GAP="0")
    train_in_process(client, admin, "exact-alarm")
    request_ids = [batch_request(client, admin, raw) for raw in seen_subjects(30)]
    before = _alarms(client, "retrain")
    assert before == 0 and _alarms(client, "sisa") == 0
    plan_approved()
    with caplog.at_level(logging.WARNING, logger="obliviate.unlearning"):
        assert execute_queued("unlearning") == ["completed"]
    request = client.get(f"/v1/erasure-requests/{request_ids[0]}", headers=admin).json()
    assert (request["status"], request["outcome"]) == ("completed", "erased")
    certificate = client.get(f"/v1/erasure-requests/{request_ids[0]}/certificate", headers=admin).json()["certificate"]
    (model,) = certificate["models"]
    assert model["method"] == "retrain" and model["method_kind"] == "exact"
    assert model["sanity_check"]["verdicts"]["verdict"] == "fail", model["sanity_check"]["verdicts"]["reasons"]
    # The metric counts the failure once, the log line says what is wrong without identifiers.
    assert _alarms(client, "retrain") == before + 1 and _alarms(client, "sisa") == 0
    (line,) = [r.getMessage() for r in caplog.records if "sanity check failed" in r.getMessage()]
    assert "lineage" in line and "exact-alarm" in line
    assert not any(raw in line for raw in seen_subjects(30))
    # The dashboard: the operator's notice, the sanity check's verdict without a red badge.
    sign_in(client, _reader(admin))
    page = client.get(f"/admin/requests/{request_ids[0]}").text
    assert NOTICE.split(".")[0] in page and 'role="alert"' in page
    assert "Sanity check: <strong class=\"badge\">fail</strong>" in page
    assert "badge bad" not in page.split('id="verif-h"')[1].split('id="cert-h"')[0]
    assert 'data-verdict="fail"' in page  # the failing check drawn in the forest plot


def _reader(admin_headers: dict) -> str:
    return admin_headers["Authorization"].removeprefix("Bearer ")
