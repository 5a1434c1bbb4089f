"""Model import: record ids as a file part (the 1 MB metadata part capped imports at about
130,000 records), and weights refused when they are NaN or infinite, of a dtype the family
does not compute in, or not the family's tensors; checked without torch."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save

from tests.dataset_files import parquet_bytes, upload
from tests.objects import N_CLASSES, N_FEATURES, create_dataset

pytestmark = pytest.mark.timeout(300)
SCOPES = "models:write,models:read,requests:review"
ROWS = 200_000
TRAINED = 180_000  # beyond what a 1 MB metadata part can list


def _weights(n_features: int = N_FEATURES, n_classes: int = N_CLASSES, dtype=np.float32, **tensors) -> bytes:
    base = {"weight": np.zeros((n_classes, n_features), dtype), "bias": np.zeros(n_classes, dtype)}
    return save({**base, **tensors})


def _import(client, headers, version_id, *, name="imported", weights=None, record_ids=None, ids_part=None):
    metadata = {"name": name, "family": "logistic_regression", "dataset_version_id": version_id}
    if record_ids is not None:
        metadata["record_ids"] = list(record_ids)
    files = {"weights": ("w.safetensors", weights if weights is not None else _weights(), "application/octet-stream")}
    if ids_part is not None:
        files["record_ids"] = ("ids", ids_part, "application/octet-stream")
    return client.post("/v1/models/import", data={"metadata": json.dumps(metadata)}, files=files, headers=headers)


@pytest.fixture
def large_dataset(client, make_key):
    headers = make_key(SCOPES, client="acme")
    ids = np.arange(ROWS)
    table = pa.table({
        "user_id": pa.array([f"big-{i // 4}" for i in ids.tolist()]), "label": pa.array(ids % 2),
        "f0": pa.array((ids % 7).astype("float64")), "f1": pa.array((ids % 11).astype("float64")),
    })
    response = upload(client, headers, parquet_bytes(table), name="big", label_column="label")
    assert response.status_code == 201, response.text
    return headers, response.json()["id"]


def _trained_ids(client, headers, name: str) -> int:
    import uuid

    from sqlalchemy import select

    from app.artifacts.store import get_store
    from app.db import session_scope
    from app.models.models import ModelVersion
    from workers.engine.partition import Manifest

    model_id = uuid.UUID(client.get(f"/v1/models/{name}", headers=headers).json()["id"])
    with session_scope() as session:
        manifest = session.scalar(select(ModelVersion.manifest_sha256).where(ModelVersion.model_id == model_id))
    return len(Manifest.from_parquet(get_store().get_bytes(manifest)).trained_ids())


def test_record_ids_as_a_text_or_parquet_file_part(client, large_dataset):
    headers, version_id = large_dataset
    trained = list(range(TRAINED))
    weights = _weights(n_features=2, n_classes=2)
    metadata = {"name": "in-metadata", "family": "logistic_regression", "dataset_version_id": version_id,
                "record_ids": trained}
    assert len(json.dumps(metadata)) > 1024 * 1024  # what the metadata part cannot carry
    too_big = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                          files={"weights": ("w", weights)}, headers=headers)
    assert too_big.status_code in (400, 413, 422), too_big.text

    as_text = "\n".join(map(str, trained)).encode() + b"\n"
    response = _import(client, headers, version_id, name="from-text", weights=weights, ids_part=as_text)
    assert response.status_code == 201, response.text
    sink = io.BytesIO()
    pq.write_table(pa.table({"record_id": pa.array(trained[::-1], pa.int64())}), sink)
    response = _import(client, headers, version_id, name="from-parquet", weights=weights, ids_part=sink.getvalue())
    assert response.status_code == 201, response.text
    assert _trained_ids(client, headers, "from-text") == _trained_ids(client, headers, "from-parquet") == TRAINED


@pytest.mark.parametrize("part, problem", [
    (b"1\n2\nthree\n", "neither Parquet"),
    (b"1\n-2\n", "neither Parquet"),
    (b"\n\n", "no record ids"),
    (b"99999999999999999999\n", "larger than"),
    (b"PAR1 not really parquet", "not a readable Parquet"),
])
def test_a_bad_record_ids_part_answers_422_without_echoing_it(client, make_key, part, problem):
    headers = make_key(SCOPES)
    version_id = create_dataset(client, headers)["id"]
    response = _import(client, headers, version_id, ids_part=part)
    assert response.status_code == 422, response.text
    assert problem in response.json()["detail"]
    assert "three" not in response.text and "99999999999999999999" not in response.text


def test_record_ids_go_in_one_place(client, make_key):
    headers = make_key(SCOPES)
    version_id = create_dataset(client, headers)["id"]
    both = _import(client, headers, version_id, record_ids=range(10), ids_part=b"1\n2\n")
    neither = _import(client, headers, version_id)
    assert both.status_code == neither.status_code == 422
    sink = io.BytesIO()
    pq.write_table(pa.table({"other": pa.array([1, 2])}), sink)
    assert _import(client, headers, version_id, ids_part=sink.getvalue()).status_code == 422
    sink = io.BytesIO()
    pq.write_table(pa.table({"record_id": pa.array([1.5, 2.0])}), sink)
    assert _import(client, headers, version_id, ids_part=sink.getvalue()).status_code == 422
    missing = _import(client, headers, version_id, ids_part=b"1\n2\n5000000\n")
    assert missing.status_code == 422 and "not in dataset version" in missing.json()["detail"]
    assert _import(client, headers, version_id, ids_part=b"1\r\n2\r\n3").status_code == 201


def _nan_weights():
    weight = np.zeros((N_CLASSES, N_FEATURES), np.float32)
    weight[3, 5] = np.nan
    return _weights(weight=weight)


def _inf_bias():
    bias = np.zeros(N_CLASSES, np.float32)
    bias[-1] = -np.inf
    return _weights(bias=bias)


@pytest.mark.parametrize("weights, problem", [
    (_nan_weights(), "NaN or infinite"),
    (_inf_bias(), "NaN or infinite"),
    (_weights(dtype=np.float64), "is F64; this family uses F32"),
    (_weights(dtype=np.float16), "is F16; this family uses F32"),
    (_weights(dtype=np.int64), "is I64; this family uses F32"),
    (_weights(n_features=N_FEATURES + 1), "tensors or shapes"),
    (_weights(extra=np.zeros(3, np.float32)), "tensors or shapes"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......", "not JSON"),
    (b"\xff" * 8 + b"{}", "header length"),
    (_weights()[:-4], "does not match its shape"),
])
def test_weights_that_the_family_cannot_use_answer_422(client, make_key, weights, problem):
    headers = make_key(SCOPES)
    version_id = create_dataset(client, headers)["id"]
    response = _import(client, headers, version_id, weights=weights, record_ids=range(100))
    assert response.status_code == 422, response.text
    assert problem in response.json()["detail"], response.json()
    assert "extra" not in response.text
    assert client.get("/v1/models/imported", headers=headers).status_code == 404


def test_the_declared_shapes_are_the_networks_shapes():
    from app.families.registry import get_family
    from workers.engine.families.base import Shape

    cases = [
        ("logistic_regression", {}, 64), ("mlp_classifier", {"hidden": [32, 16]}, 64),
        ("mlp_classifier", {"hidden": [8, 4], "dropout": 0.2}, 10), ("cnn_classifier", {}, 64),
        ("cnn_classifier", {"image_shape": [3, 5, 1], "channels": [4, 6, 2]}, 15),
        ("cnn_classifier", {"image_shape": [1, 28, 28], "channels": [4, 8, 8, 8, 8, 8]}, 784),
    ]
    for family, params, n_features in cases:
        spec = get_family(family)
        config = spec.parse_params(params)
        network = spec.load_implementation().build_network(config, Shape(n_features, 10))
        assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == spec.parameter_shapes(config, n_features, 10)
        assert {str(v.dtype) for v in network.state_dict().values()} == {"torch.float32"} and spec.weight_dtypes == ("F32",)


def test_an_import_does_not_load_torch_in_the_api_process(database_url):
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        from fastapi.testclient import TestClient
        from safetensors.numpy import save
        from app.db import session_scope
        from app.keys import service
        from app.main import create_app
        from tests.dataset_files import parquet_bytes, digits_table, upload

        with session_scope() as session:
            _key, plaintext = service.create_key(session, "torchless", ["models:write", "models:read"], client="torchless")
        headers = {"Authorization": f"Bearer {plaintext}"}
        with TestClient(create_app()) as client:
            version = upload(client, headers, parquet_bytes(digits_table(subjects=30)), name="torchless").json()["id"]
            weights = save({"weight": np.zeros((10, 64), np.float32), "bias": np.zeros(10, np.float32)})
            metadata = {"name": "torchless", "family": "logistic_regression", "dataset_version_id": version}
            response = client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                                   files={"weights": ("w", weights), "record_ids": ("ids", b"1\\n2\\n3\\n")}, headers=headers)
        print(json.dumps({"status": response.status_code, "torch": "torch" in sys.modules}))
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"status": 201, "torch": False}
