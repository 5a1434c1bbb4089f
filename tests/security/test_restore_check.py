"""Issue 20, item 20: a backup restore must not bring erased people back. Each completed erasure
leaves a signed entry in the erasure log outside the database; `obliviate restore-check`
compares a restored database with it and re-applies, through the ordinary unlearning path, every
erasure the restored database lost: the rows, the model versions trained on them, the
tombstones."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.dataset_files import subject_id
from tests.objects import approve, create_dataset, create_request, import_model
from tests.security.restore_helpers import back_up, restore

SCOPES = "requests:write,requests:read,requests:review,models:write,models:read"
ERASED = subject_id(1)  # among the records the imported weights were trained on


@pytest.fixture
def alpha(client, make_key, settings_env, tmp_path):
    # The erasure log and the checkpoints live where a restore of the database and the artifact
    # store does not reach, as docs/operations.md asks.
    settings_env(BATCH_WINDOW_SECONDS="3600", DEADLINE_MARGIN_HOURS="0",
                 ERASURE_LOG_DIR=tmp_path / "erasure-log", CHECKPOINT_DIR=tmp_path / "checkpoints")
    headers = make_key(SCOPES, client="alpha")
    dataset = create_dataset(client, headers)
    model = import_model(client, headers, dataset["id"], name="kept")
    return headers, dataset, model


def _erase(client, headers) -> str:
    request_id = create_request(client, headers, identifiers={"user_id": ERASED})["id"]
    assert approve(client, headers, request_id).status_code == 200
    return request_id


def _run_unlearning() -> list[str]:
    """What the workers do: plan approved requests, then run every queued unlearning job."""
    from app.db import session_scope, utcnow
    from app.jobs.models import Job
    from app.unlearning import planner
    from workers import jobs

    with session_scope() as session:
        planner.plan_approved(session)
        queued = list(session.scalars(select(Job).where(Job.kind == "unlearning", Job.status == "queued")))
        for job in queued:
            job.not_before = utcnow()
        ids = [str(job.id) for job in queued]
    return [jobs.execute(job_id) for job_id in ids]


def _held(raw: str = ERASED) -> tuple[int, int, bool]:
    """(datasets, models) still holding the subject in live versions, and whether it is tombstoned."""
    from app.datasets import service as dataset_service
    from app.db import session_scope
    from app.pseudonym import subject_key
    from app.unlearning import planner

    key = subject_key("user_id", raw)
    with session_scope() as session:
        datasets, models = planner.holdings(session, "alpha", [("user_id", key)])
        return len(datasets), len(models), key in dataset_service.tombstoned_keys(session, "alpha", [key])


def _live_versions(model_id: str) -> list[int]:
    from app.db import session_scope
    from app.models.models import ModelVersion

    with session_scope() as session:
        return sorted(session.scalars(select(ModelVersion.version).where(
            ModelVersion.model_id == uuid.UUID(model_id), ModelVersion.destroyed_at.is_(None))))


def _restore_check(*args: str):
    from app.cli import cli

    return CliRunner().invoke(cli, ["restore-check", *args], env={"COLUMNS": "250"})


def test_a_restored_backup_does_not_bring_an_erased_person_back(client, alpha, database_url, data_dir, tmp_path):
    headers, _dataset, model = alpha
    backup = back_up(database_url, data_dir / "artifacts", tmp_path)

    request_id = _erase(client, headers)
    assert _run_unlearning() == ["completed"]
    assert _held() == (0, 0, True)
    assert _live_versions(model["id"]) == [2]
    log_files = list((tmp_path / "erasure-log").glob("*.json"))
    assert [f.name for f in log_files] == [f"{request_id}.json"]
    entry = json.loads(log_files[0].read_text())
    assert ERASED not in log_files[0].read_text()  # pseudonymised keys only
    assert entry["request_id"] == request_id and entry["client"] == "alpha"

    restore(backup)
    assert _held() == (1, 1, False)  # the restore brought the person back
    assert _live_versions(model["id"]) == [1]

    result = _restore_check()
    assert result.exit_code == 0, result.output
    assert request_id in result.output and "missing" in result.output and "re-applied" in result.output
    assert "restored from a backup" in result.output  # the log ends before the published checkpoint
    assert _held()[2] is True  # tombstoned at once: an upload in the meantime drops the person
    assert _run_unlearning() == ["completed"]
    assert _held() == (0, 0, True)
    assert _live_versions(model["id"]) == [2]  # the version trained on the person is destroyed

    again = _restore_check()
    assert again.exit_code == 0, again.output
    assert "0 erasure(s) re-applied now" in again.output


def test_an_unchanged_database_needs_nothing_and_a_forged_entry_fails(client, alpha, tmp_path):
    headers, _dataset, _model = alpha
    request_id = _erase(client, headers)
    assert _run_unlearning() == ["completed"]
    result = _restore_check()
    assert result.exit_code == 0, result.output
    assert "in place" in result.output and "0 erasure(s) re-applied now" in result.output

    log = tmp_path / "erasure-log"
    entry = json.loads((log / f"{request_id}.json").read_text())
    forged = {**entry, "request_id": str(uuid.uuid4()), "client": "beta"}  # signature of the original
    (log / f"{forged['request_id']}.json").write_text(json.dumps(forged))
    extra = {**entry, "note": "outside the signed body"}
    (log / "extra.json").write_text(json.dumps(extra))
    result = _restore_check()
    assert result.exit_code == 1, result.output
    assert "the signature does not verify" in result.output
    assert "fields outside its signed body" in result.output


def test_an_erasure_that_cannot_be_reapplied_exits_non_zero(client, alpha, database_url, data_dir, tmp_path):
    from app.db import session_scope
    from app.requests import service as request_service
    from app.requests.models import ErasureRequest

    headers, _dataset, _model = alpha
    backup = back_up(database_url, data_dir / "artifacts", tmp_path)
    request_id = _erase(client, headers)
    assert _run_unlearning() == ["completed"]
    restore(backup)
    assert _restore_check().exit_code == 0
    with session_scope() as session:
        (reapplied,) = session.scalars(select(ErasureRequest).where(ErasureRequest.external_id == f"restore:{request_id}"))
        request_service.move(session, reapplied, "fail", "worker:test", reason="the job failed")
    result = _restore_check("--wait", "1")
    assert result.exit_code == 1, result.output
    assert "not re-applied" in result.output and "1 could not be" in result.output, result.output
    assert Path(tmp_path / "erasure-log" / f"{request_id}.json").is_file()
