from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from app.artifacts.store import ArtifactCorrupted, ArtifactMissing, ArtifactStore, get_store, store_for


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    # The memory filesystem is process-wide: a fresh root per test, removed afterwards.
    store = ArtifactStore(f"memory://artifacts-{uuid.uuid4().hex}")
    yield store
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)


def files_under(store: ArtifactStore) -> list[str]:
    return sorted(store.fs.find(store.root)) if store.fs.exists(store.root) else []


def overwrite(store: ArtifactStore, sha: str, data: bytes) -> None:
    with store.fs.open(store.path(sha), "wb") as handle:
        handle.write(data)


def test_put_and_get_by_content_hash(store):
    data = os.urandom(5000)
    sha = store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path(sha).endswith(f"/{sha[:2]}/{sha}")
    assert store.exists(sha) and store.get_bytes(sha) == data
    with store.open_verified(sha) as handle:
        handle.seek(100)
        assert handle.read(10) == data[100:110]
    assert files_under(store) == [store.path(sha)]


def test_put_is_idempotent(store, monkeypatch):
    sha = store.put_bytes(b"same bytes")
    writes = []
    monkeypatch.setattr(store, "_staged", lambda *a, **k: writes.append(a))
    assert store.put_bytes(b"same bytes") == sha
    assert writes == [] and files_under(store) == [store.path(sha)]


def test_put_file_streams_and_hashes(store, tmp_path):
    source = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    sha = store.put_file(source)
    assert sha == hashlib.sha256(data).hexdigest() and store.get_bytes(sha) == data
    assert store.put_file(source, sha=sha) == sha


def test_interrupted_write_leaves_no_file_under_the_final_name(store):
    sha = hashlib.sha256(b"the whole content").hexdigest()
    with pytest.raises(RuntimeError):
        with store._staged(sha) as handle:
            handle.write(b"the whole")
            raise RuntimeError("killed mid-write")
    assert not store.exists(sha)
    assert files_under(store) == []


def test_source_that_does_not_match_its_hash_is_not_stored(store, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"actual content")
    claimed = hashlib.sha256(b"other content").hexdigest()
    with pytest.raises(ArtifactCorrupted):
        store.put_file(source, sha=claimed)
    assert not store.exists(claimed) and files_under(store) == []


def test_corruption_is_detected_on_read(store):
    sha = store.put_bytes(b"weights" * 100)
    overwrite(store, sha, b"weightz" * 100)
    for read in (store.get_bytes, store.verify, store.open_verified):
        with pytest.raises(ArtifactCorrupted):
            read(sha)


def test_a_damaged_file_is_repaired_by_putting_it_again(store):
    data = b"x" * 1000
    sha = store.put_bytes(data)
    overwrite(store, sha, data[:10])
    assert store.put_bytes(data) == sha and store.get_bytes(sha) == data


def test_missing_artifacts(store):
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(sha)
    for read in (store.get_bytes, store.verify, store.open_verified):
        with pytest.raises(ArtifactMissing):
            read(sha)


def test_delete_removes_the_bytes(store):
    sha = store.put_bytes(b"personal weights")
    assert store.fs.exists(store.path(sha))
    assert store.delete(sha) is True
    assert not store.exists(sha) and store.delete(sha) is False
    assert not store.fs.exists(store.path(sha)) and files_under(store) == []
    with pytest.raises(ArtifactMissing):
        store.get_bytes(sha)


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABC", "a" * 63, "g" * 64, ""])
def test_keys_must_be_sha256_digests(store, key):
    with pytest.raises(ValueError):
        store.get_bytes(key)


def test_get_store_follows_the_settings(settings_env, tmp_path):
    settings_env(ARTIFACTS_URL="memory://from-settings")
    first = get_store()
    assert first.url == "memory://from-settings" and get_store() is first
    settings_env(ARTIFACTS_URL=str(tmp_path / "elsewhere"))
    second = get_store()
    assert second is not first and second.is_local
    assert store_for("memory://from-settings") is first
    sha = second.put_bytes(b"abc")
    assert (tmp_path / "elsewhere" / sha[:2] / sha).read_bytes() == b"abc"
