from __future__ import annotations

import hashlib
import io
import json
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text

from app.artifacts.store import get_store
from app.datasets.models import Dataset, DatasetVersion, SubjectRecords, Tombstone
from app.db import get_engine, session_scope, utcnow
from app.pseudonym import subject_key
from tests.dataset_files import (
    DIGITS_ROWS,
    FEATURES,
    PLANTED,
    artifact_files,
    csv_bytes,
    digits_table,
    parquet_bytes,
    records_of,
    upload,
)

WRITER = "models:write,models:read"


@pytest.fixture(scope="module")
def table():
    return digits_table(subjects=300)


def counts() -> tuple[int, int, int]:
    with session_scope() as session:
        tables = (Dataset, DatasetVersion, SubjectRecords)
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in tables)


def test_csv_upload_stores_pseudonymised_parquet(client, writer, table, data_dir):
    r = upload(client, writer, csv_bytes(table))
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/datasets/{body['dataset_id']}"
    assert (body["name"], body["version"], body["rows"], body["subjects"]) == ("digits", 1, DIGITS_ROWS, 300)
    assert body["columns"] == FEATURES and body["classes"] == list(range(10)) and body["filtered_rows"] == 0
    stored = get_store().get_bytes(body["sha256"])
    assert hashlib.sha256(stored).hexdigest() == body["sha256"]
    assert PLANTED.encode() not in stored and PLANTED not in r.text
    saved = pq.read_table(io.BytesIO(stored))
    assert saved.column_names == ["record_id", "subject_key", "label", *FEATURES]
    assert saved.schema.field("record_id").type == pa.int64() and saved.schema.field("pixel_5").type == pa.float32()
    assert saved.column("record_id").to_pylist() == list(range(DIGITS_ROWS))
    assert saved.column("label").to_pylist() == table.column("digit").to_pylist()
    assert saved.column("subject_key")[0].as_py() == subject_key("user_id", PLANTED)
    assert saved.column("pixel_10").to_pylist() == [float(v) for v in table.column("pixel_10").to_pylist()]
    with session_scope() as session:
        index = session.scalars(select(SubjectRecords)).all()
    assert len(index) == 300 and sum(len(s.record_ids) for s in index) == DIGITS_ROWS
    planted = next(s for s in index if s.subject_key == subject_key("user_id", PLANTED))
    assert planted.record_ids == list(range(records_of(table, PLANTED)))
    assert not list((data_dir / "tmp").iterdir())


def test_raw_ids_never_reach_the_database(client, writer, table, data_dir):
    assert upload(client, writer, parquet_bytes(table)).status_code == 201
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        for path in data_dir.glob("obliviate.db*"):
            assert PLANTED.encode() not in path.read_bytes()
    else:
        from app.tables import metadata

        with engine.connect() as connection:
            for name in metadata.tables:
                dump = connection.execute(text(f"SELECT string_agg(t::text, '') FROM {name} t")).scalar() or ""
                assert PLANTED not in dump and "u0042" not in dump


def test_parquet_with_text_labels_and_chosen_features(client, writer):
    table = digits_table(subjects=50, label_names=True)
    r = upload(client, writer, parquet_bytes(table), feature_columns="pixel_3, pixel_1")
    assert r.status_code == 201, r.text
    assert r.json()["columns"] == ["pixel_3", "pixel_1"]
    assert r.json()["classes"] == [f"digit-{i}" for i in range(10)]
    r = upload(client, writer, parquet_bytes(table), name="as-json", feature_columns=json.dumps(["pixel_9"]))
    assert r.status_code == 201 and r.json()["columns"] == ["pixel_9"]


def test_same_name_adds_a_version_if_compatible(client, writer, table):
    first = upload(client, writer, csv_bytes(table)).json()
    second = upload(client, writer, parquet_bytes(table.slice(0, 500)))
    assert second.status_code == 201, second.text
    assert second.json()["dataset_id"] == first["dataset_id"] and second.json()["version"] == 2
    assert upload(client, writer, csv_bytes(table), feature_columns="pixel_1").status_code == 409
    assert upload(client, writer, csv_bytes(table), subject_kind="customer").status_code == 409
    relabelled = table.set_column(1, "digit", pa.array([int(v) + 10 for v in table.column("digit").to_pylist()]))
    assert upload(client, writer, csv_bytes(relabelled)).status_code == 409
    detail = client.get(f"/v1/datasets/{first['dataset_id']}", headers=writer).json()
    assert detail["current_version"] == 2
    versions = [(v["version"], v["rows"], v["current"]) for v in detail["versions"]]
    assert versions == [(1, DIGITS_ROWS, False), (2, 500, True)]


def test_list_and_detail_show_versions_and_models(client, writer, make_key, table):
    created = upload(client, writer, csv_bytes(table)).json()
    _add_model_version(created["dataset_id"], created["id"])
    listing = client.get("/v1/datasets", headers=writer).json()
    assert [d["name"] for d in listing["items"]] == ["digits"] and listing["next_cursor"] is None
    for any_id in (created["dataset_id"], created["id"]):
        detail = client.get(f"/v1/datasets/{any_id}", headers=writer)
        assert detail.status_code == 200, detail.text
    version = detail.json()["versions"][0]
    assert (version["id"], version["sha256"]) == (created["id"], created["sha256"])
    assert (version["subjects"], version["destroyed"]) == (300, False)
    assert version["origin"]["kind"] == "upload"
    assert [(m["model"], m["version"], m["current"]) for m in version["models"]] == [("digits-mlp", 1, True)]
    other = make_key(WRITER, client="globex")
    assert client.get(f"/v1/datasets/{created['dataset_id']}", headers=other).status_code == 404
    assert client.get("/v1/datasets", headers=other).json()["items"] == []
    assert client.get(f"/v1/datasets/{uuid.uuid4()}", headers=writer).json()["status"] == 404


def _add_model_version(dataset_id: str, version_id: str) -> None:
    from app.models.models import Model, ModelVersion

    with session_scope() as session:
        model = Model(
            client="acme", name="digits-mlp", family="mlp_classifier", dataset_id=uuid.UUID(dataset_id), params={},
            sisa=None, holdout_fraction=0.1, seed=1, current_version=1, created_at=utcnow(),
        )
        session.add(model)
        session.flush()
        session.add(ModelVersion(
            model_id=model.id, version=1, dataset_version_id=uuid.UUID(version_id), family="mlp_classifier",
            params={}, seed=1, shape={}, sisa=None, manifest_sha256="0" * 64, shards=[], sha256="1" * 64,
            metrics={}, origin={"kind": "training"}, state={}, created_at=utcnow(),
        ))


def _bad_files(table: pa.Table) -> dict[str, tuple[bytes, dict]]:
    with_text = table.append_column("notes", pa.array(["x"] * table.num_rows))
    with_null = table.set_column(2, "pixel_0", pa.array([None] + [1.0] * (table.num_rows - 1)))
    return {
        "not parquet or csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, {}),
        "broken parquet": (b"PAR1" + b"\x00garbage" * 50, {}),
        "empty file": (b"", {}),
        "header only": (b"user_id,digit,pixel_0\n", {}),
        "missing subject column": (csv_bytes(table.drop_columns(["user_id"])), {}),
        "missing label column": (csv_bytes(table.drop_columns(["digit"])), {}),
        "unknown feature column": (csv_bytes(table), {"feature_columns": "pixel_0,nope"}),
        "non-numeric feature": (parquet_bytes(with_text), {}),
        "null feature": (parquet_bytes(with_null), {}),
        "ragged csv": (csv_bytes(table) + b"u0001,3\n", {}),
        "bad subject value": (csv_bytes(table), {"subject_kind": "email"}),
    }


@pytest.mark.parametrize("case", list(_bad_files(digits_table(subjects=20))))
def test_bad_uploads_are_refused_and_nothing_is_stored(client, writer, data_dir, case):
    content, fields = _bad_files(digits_table(subjects=20))[case]
    before = artifact_files(data_dir)
    r = upload(client, writer, content, **fields)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert PLANTED not in r.text and "u0001" not in r.text
    if case == "non-numeric feature":
        assert "'notes'" in r.json()["detail"]
    if case == "bad subject value":
        assert r.json()["detail"].startswith("Record 1 ")
    assert counts() == (0, 0, 0)
    assert artifact_files(data_dir) == before
    assert not list((data_dir / "tmp").iterdir())


def test_upload_over_the_size_limit_is_413(client, writer, settings_env, table, data_dir):
    settings_env(MAX_UPLOAD_BYTES=10_000)
    before = artifact_files(data_dir)
    r = upload(client, writer, csv_bytes(table))
    assert r.status_code == 413 and r.json()["type"].endswith("payload-too-large"), r.text
    assert counts() == (0, 0, 0) and artifact_files(data_dir) == before
    assert not list((data_dir / "tmp").iterdir())


def test_tombstoned_subjects_are_filtered(client, writer, table):
    with session_scope() as session:
        for client_name, raw_id in (("acme", "u0003"), ("globex", "u0004")):
            key = subject_key("user_id", raw_id)
            session.add(Tombstone(client=client_name, subject_key=key, request_id=uuid.uuid4(), created_at=utcnow()))
    r = upload(client, writer, csv_bytes(table))
    assert r.status_code == 201, r.text
    assert r.json()["filtered_rows"] == records_of(table, "u0003")
    assert r.json()["rows"] == DIGITS_ROWS - records_of(table, "u0003") and r.json()["subjects"] == 299
    saved = pq.read_table(io.BytesIO(get_store().get_bytes(r.json()["sha256"])))
    assert subject_key("user_id", "u0003") not in set(saved.column("subject_key").to_pylist())
    assert saved.column("record_id").to_pylist() == list(range(saved.num_rows))


def test_idempotency_key_replays_the_upload(client, writer, table):
    content = csv_bytes(table)
    first = upload(client, writer, content, extra_headers={"Idempotency-Key": "up-1"})
    again = upload(client, writer, content, extra_headers={"Idempotency-Key": "up-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = upload(client, writer, csv_bytes(table.slice(0, 100)), extra_headers={"Idempotency-Key": "up-1"})
    assert other.status_code == 422
    assert counts()[1] == 1


def test_scopes_and_strict_form(client, make_key, writer, table):
    reader_only = make_key("requests:read")
    assert upload(client, reader_only, csv_bytes(table)).status_code == 403
    assert client.get("/v1/datasets", headers=reader_only).status_code == 403
    assert upload(client, writer, csv_bytes(table), colour="blue").status_code == 422
    assert upload(client, writer, csv_bytes(table), name="bad name!").status_code == 422
    assert upload(client, writer, csv_bytes(table), label_column=None).status_code == 422
    assert counts() == (0, 0, 0)


def test_listing_pages_with_a_cursor(client, writer):
    small = digits_table(subjects=10).slice(0, 60)
    for name in ("a", "b", "c"):
        assert upload(client, writer, csv_bytes(small), name=name).status_code == 201
    first = client.get("/v1/datasets", params={"limit": 2}, headers=writer).json()
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}, headers=writer).json()
    assert [d["name"] for d in first["items"] + second["items"]] == ["c", "b", "a"] and second["next_cursor"] is None
    assert client.get("/v1/datasets", params={"cursor": "nonsense"}, headers=writer).status_code == 400
