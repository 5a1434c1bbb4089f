"""The chaos set test's short run (bench/chaos.py --short): 150 erasure requests from 8 clients
while a worker, Redis, PostgreSQL or the API's connections fail every 2-4 s, on a PostgreSQL
cluster and a Redis the harness starts for itself. Nothing may be lost, appear unasked, or
happen twice, and every audit chain must verify.

The harness needs the PostgreSQL server binaries and redis-server. CI has them, so there a
missing binary fails the test; elsewhere it is skipped with the reason."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def chaos():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import chaos as harness
    from chaos_cluster import MissingBinaries, check_binaries

    try:
        check_binaries()
    except MissingBinaries as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the chaos test needs its binaries in CI: {exc}")
        pytest.skip(f"chaos test needs PostgreSQL server binaries and redis-server: {exc}")
    return harness


def test_short_chaos_run(chaos, tmp_path):
    report = chaos.main(["--short", "--quiet", "--seed", "3", "--output", str(tmp_path / "chaos.json")])
    summary = {k: report[k] for k in ("acknowledged", "lost", "unexpected", "duplicated", "failed", "statuses",
                                      "fault_counts", "fault_errors", "client_gave_up", "residual_subjects")}
    assert report["acknowledged"] == 150, summary
    assert report["lost"] == 0, report["lost_ids"]
    assert report["unexpected"] == 0, report["unexpected_ids"]
    assert report["duplicated"] == 0, (report["duplicated_model_versions"], report["duplicated_dataset_versions"])
    assert report["audit_verify_exit"] == 0, report["audit_verify_output"]
    assert report["seconds_to_terminal_after_heal"] is not None, summary
    assert not report["replay_mismatches"] and not report["conflict_mismatches"], summary
    assert report["replays"] > 0 and report["conflicts"] > 0 and report["unkeyed"] > 0, summary
    assert not report["residual_subjects"] and not report["completed_without_certificate"], summary
    assert len(report["faults"]) - len(report["fault_errors"]) >= 6, summary
    assert report["ok"], report["goals"]
