from __future__ import annotations

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from app.artifacts.store import get_store
from app.datasets import service as dataset_service
from app.datasets.erasure import LineageMismatch
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords
from app.db import session_scope, utcnow
from app.lineage.sharding import shard_of
from app.models.models import Model, ModelVersion
from app.pseudonym import subject_digest, subject_key, subject_keys
from app.unlearning import service as unlearning_service
from tests.dataset_files import DIGITS_ROWS, PLANTED, csv_bytes, digits_table, parquet_bytes, records_of, upload
from workers.destruction import purge

REVIEW = "requests:review,models:write,models:read"


@pytest.fixture(scope="module")
def table():
    return digits_table(subjects=300)


@pytest.fixture
def reviewer(make_key):
    return make_key(REVIEW)


@pytest.fixture
def uploaded(client, reviewer, table):
    r = upload(client, reviewer, csv_bytes(table))
    assert r.status_code == 201, r.text
    return r.json()


def lookup(client, headers, raw_id: str = "u0007", kind: str = "user_id", **extra):
    return client.post("/v1/subjects/lookup", json={"identifiers": {kind: raw_id}, **extra}, headers=headers)


def add_sisa_model(version_id: str, shards: int = 4, slices: int = 2) -> str:
    """A model version trained on the dataset version, with a manifest built by the SISA rule."""
    store = get_store()
    with session_scope() as session:
        version = session.get(DatasetVersion, uuid.UUID(version_id))
        data = pq.read_table(io.BytesIO(store.get_bytes(version.sha256)), columns=["record_id", "subject_key"])
        keys = data.column("subject_key").to_pylist()
        manifest = pa.table({
            "record_id": data.column("record_id"),
            "shard": pa.array([shard_of(k, shards) for k in keys], pa.int64()),
            "slice": pa.array([r % slices for r in range(len(keys))], pa.int64()),
        })
        sink = io.BytesIO()
        pq.write_table(manifest, sink)
        model = Model(
            client="acme", name="digits-sisa", family="mlp_classifier", dataset_id=version.dataset_id, params={},
            sisa={"shards": shards, "slices": slices}, holdout_fraction=0.0, seed=3, current_version=1,
            created_at=utcnow(),
        )
        session.add(model)
        session.flush()
        model_version = ModelVersion(
            model_id=model.id, version=1, dataset_version_id=version.id, family="mlp_classifier", params={}, seed=3,
            shape={}, sisa=model.sisa, manifest_sha256=store.put_bytes(sink.getvalue()), shards=[], sha256="2" * 64,
            metrics={}, origin={"kind": "training"}, state={}, created_at=utcnow(),
        )
        session.add(model_version)
        session.flush()
        return str(model_version.id)


def test_lookup_finds_the_subject_without_revealing_it(client, reviewer, uploaded, table):
    r = lookup(client, reviewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "u0007" not in r.text
    assert body["subject_digest"] == subject_digest(subject_keys({"user_id": "u0007"}))
    assert body["datasets"] == [{
        "dataset_id": uploaded["dataset_id"], "name": "digits", "version": 1, "dataset_version_id": uploaded["id"],
        "records": records_of(table, "u0007"), "current": True, "destroyed": False,
    }]
    assert body["models"] == []


def test_lookup_reports_model_versions_shards_and_slices(client, reviewer, uploaded, table):
    model_version_id = add_sisa_model(uploaded["id"])
    key = subject_key("user_id", "u0007")
    hit = lookup(client, reviewer).json()["models"]
    found = [(m["model"], m["version"], m["model_version_id"], m["current"]) for m in hit]
    assert found == [("digits-sisa", 1, model_version_id, True)]
    assert hit[0]["records"] == records_of(table, "u0007")
    assert hit[0]["shard"] == shard_of(key, 4) and hit[0]["slices"] is None
    detailed = lookup(client, reviewer, include_slices=True).json()["models"][0]
    assert detailed["shard"] == shard_of(key, 4) and detailed["records"] == records_of(table, "u0007")
    with session_scope() as session:
        record_ids = session.scalar(select(SubjectRecords.record_ids).where(SubjectRecords.subject_key == key))
    assert detailed["slices"] == sorted({r % 2 for r in record_ids})


def test_sharding_rule_is_the_engines(uploaded):
    import numpy as np

    from workers.engine.partition import partition

    keys = [subject_key("user_id", f"u{i:04d}") for i in range(1, 50)]
    manifest = partition(np.arange(len(keys)), np.array(keys), seed=0, holdout_fraction=0, shards=8, slices=1)
    assert manifest.shards.tolist() == [shard_of(k, 8) for k in keys]


def test_other_clients_and_unknown_subjects_find_nothing(client, reviewer, make_key, uploaded):
    other = make_key(REVIEW, client="globex")
    # Another client holds no user_id: its look-up by one is refused as an unknown kind, like a
    # kind no dataset holds, and the answer names only kinds.
    for headers, kind in ((other, "user_id"), (reviewer, "customer_id")):
        refused = lookup(client, headers, "u0007", kind)
        assert refused.status_code == 422 and "u0007" not in refused.text
        assert kind in refused.json()["unknown_kinds"]
    assert lookup(client, other, "u0007@example.org", "email").json()["datasets"] == []
    body = lookup(client, reviewer, "u9999", "user_id").json()
    assert body["datasets"] == [] and body["models"] == []


def test_lookup_request_rules(client, make_key, reviewer, uploaded):
    assert lookup(client, make_key("requests:read,models:read")).status_code == 403
    assert lookup(client, reviewer, extra_field=1).status_code == 422
    bad = lookup(client, reviewer, "not-an-email", "email")
    assert bad.status_code == 422 and "not-an-email" not in bad.text
    body = {"identifiers": {"user_id": PLANTED, "email": "x@y.org"}}
    both = client.post("/v1/subjects/lookup", json=body, headers=reviewer)
    assert both.status_code == 200 and both.json()["datasets"][0]["records"] > 0


def _erase(version_id: str, raw_ids: list[str], job_id: uuid.UUID):
    with session_scope() as session:
        version = session.get(DatasetVersion, uuid.UUID(version_id))
        outcome = dataset_service.erase_subjects(session, version, [subject_key("user_id", r) for r in raw_ids], job_id)
        new = outcome.version
        return new.id, new.sha256, outcome.created, outcome.rows_removed, outcome.subjects_removed


def test_erase_subjects_makes_a_version_without_them(client, reviewer, uploaded, table):
    job = uuid.uuid4()
    gone = ["u0001", "u0002", "u9999"]
    removed = records_of(table, "u0001") + records_of(table, "u0002")
    new_id, new_sha, created, rows_removed, subjects_removed = _erase(uploaded["id"], gone, job)
    assert (created, rows_removed, subjects_removed) == (True, removed, 2)
    before = pq.read_table(io.BytesIO(get_store().get_bytes(uploaded["sha256"])))
    after = pq.read_table(io.BytesIO(get_store().get_bytes(new_sha)))
    erased_keys = {subject_key("user_id", r) for r in gone}
    kept = before.filter(pa.array([k not in erased_keys for k in before.column("subject_key").to_pylist()]))
    assert after.equals(kept) and after.num_rows == DIGITS_ROWS - removed
    with session_scope() as session:
        new = session.get(DatasetVersion, new_id)
        dataset = session.get(Dataset, new.dataset_id)
        assert (new.version, dataset.current_version, new.subjects, new.rows) == (2, 2, 298, DIGITS_ROWS - removed)
        assert new.parent_version_id == uuid.UUID(uploaded["id"]) and new.origin["job_id"] == str(job)
        index = dict(session.execute(select(SubjectRecords.subject_key, SubjectRecords.record_ids).where(
            SubjectRecords.dataset_version_id == new_id)).all())
        old_index = dict(session.execute(select(SubjectRecords.subject_key, SubjectRecords.record_ids).where(
            SubjectRecords.dataset_version_id == uuid.UUID(uploaded["id"]))).all())
    assert index == {k: v for k, v in old_index.items() if k not in erased_keys}
    # A re-run of the job answers the same version; another job on the same data writes the same bytes.
    assert _erase(uploaded["id"], gone, job)[:3] == (new_id, new_sha, False)
    assert _erase(uploaded["id"], gone, uuid.uuid4())[1] == new_sha
    assert _erase(str(new_id), ["u0001"], uuid.uuid4())[2:] == (False, 0, 0)
    found = lookup(client, reviewer, "u0001").json()["datasets"]
    assert [(d["version"], d["current"]) for d in found] == [(1, False)]


def test_destroy_version_file(client, reviewer, uploaded, table):
    new_id = _erase(uploaded["id"], ["u0001"], uuid.uuid4())[0]
    with session_scope() as session:
        old = session.get(DatasetVersion, uuid.UUID(uploaded["id"]))
        sha = dataset_service.mark_version_destroyed(session, old)
        assert unlearning_service.schedule_unreferenced(session, [sha]) == [sha]
        # The bytes go only after the destruction committed.
        assert old.destroyed_at is not None and get_store().exists(sha)
    assert purge([sha]) == 1 and not get_store().exists(sha)
    with session_scope() as session:
        again = dataset_service.mark_version_destroyed(session, session.get(DatasetVersion, uuid.UUID(uploaded["id"])))
        assert unlearning_service.schedule_unreferenced(session, [again]) == [sha]
    assert purge([sha]) == 0
    found = lookup(client, reviewer, "u0001").json()["datasets"]
    assert [(d["version"], d["destroyed"], d["current"]) for d in found] == [(1, True, False)]
    versions = client.get(f"/v1/datasets/{uploaded['dataset_id']}", headers=reviewer).json()["versions"]
    assert [(v["version"], v["destroyed"], v["current"]) for v in versions] == [(1, True, False), (2, False, True)]
    assert get_store().exists(versions[1]["sha256"]) and str(new_id) == versions[1]["id"]


def test_shared_bytes_survive_until_the_last_version_is_destroyed(client, reviewer, uploaded, table):
    again = upload(client, reviewer, csv_bytes(table)).json()
    assert again["sha256"] == uploaded["sha256"] and again["version"] == 2
    with session_scope() as session:
        first, second = (session.get(DatasetVersion, uuid.UUID(v["id"])) for v in (uploaded, again))
        assert unlearning_service.schedule_unreferenced(session, [dataset_service.mark_version_destroyed(session, first)]) == []
    assert purge([first.sha256]) == 0 and get_store().exists(first.sha256)
    with session_scope() as session:
        second = session.get(DatasetVersion, second.id)
        sha = dataset_service.mark_version_destroyed(session, second)
        assert unlearning_service.schedule_unreferenced(session, [sha]) == [sha]
    assert purge([sha]) == 1 and not get_store().exists(sha)


def test_erasure_refuses_an_index_that_disagrees_with_the_file(uploaded):
    key = subject_key("user_id", "u0005")
    with session_scope() as session:
        row = session.get(SubjectRecords, (uuid.UUID(uploaded["id"]), key))
        row.record_ids = row.record_ids[:1]
    with pytest.raises(LineageMismatch):
        _erase(uploaded["id"], ["u0005"], uuid.uuid4())
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 1


def test_integer_subject_ids_match_their_text_form(client, reviewer):
    table = digits_table(subjects=40).set_column(0, "user_id", pa.array([i % 40 for i in range(DIGITS_ROWS)]))
    assert upload(client, reviewer, parquet_bytes(table), name="numeric-ids").status_code == 201
    assert lookup(client, reviewer, "17").json()["datasets"][0]["records"] == records_of(table, 17)
