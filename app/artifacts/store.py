"""Content-addressed artifact store over fsspec (docs/architecture.md, "Weights are safetensors": sha256 keys, atomic writes, checked
on read).

An artifact lives at `<root>/<sha[:2]>/<sha>`. Writes go to a temporary name in that same folder
and are renamed into place, so an interrupted write never leaves a partial file under a final
name. The key is the content's hash, so writing the same bytes twice is a no-op, and every read
recomputes the hash: a flipped bit on disk or in a bucket becomes `ArtifactCorrupted`, never a
silently different model.

The root is `settings.artifacts_url`: a local folder by default, or any fsspec URL
(`s3://bucket/prefix`, `memory://name` in tests).
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO

import fsspec.core
from fsspec.implementations.local import LocalFileSystem

from app.config import get_settings

CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """Base of the store's errors; messages name the hash, which is not personal data."""


class ArtifactMissing(ArtifactError):
    pass


class ArtifactCorrupted(ArtifactError):
    pass


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_key(sha: str) -> str:
    # Keys become paths: anything but a lower-case hex digest could walk out of the root.
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ValueError("artifact keys are sha256 hex digests (64 lower-case hex characters)")
    return sha


class ArtifactStore:
    def __init__(self, url: str):
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, sha: str) -> str:
        _check_key(sha)
        return f"{self.root}/{sha[:2]}/{sha}"

    def exists(self, sha: str) -> bool:
        return bool(self.fs.exists(self.path(sha)))

    # Writing.

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self._present(sha, len(data)):
            return sha
        with self._staged(sha) as handle:
            handle.write(data)
        return sha

    def put_file(self, path: str | os.PathLike, *, sha: str | None = None) -> str:
        """Store a local file. It is hashed first (unless the caller already knows `sha`), so
        content already stored is never copied again; the copy is hashed as it streams and must
        match, which catches a source file that changed while it was being stored."""
        expected = _check_key(sha) if sha is not None else sha256_file(path)
        size = os.path.getsize(path)
        if self._present(expected, size):
            return expected
        digest = hashlib.sha256()
        with self._staged(expected, verify=digest) as target, open(path, "rb") as source:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                digest.update(chunk)
                target.write(chunk)
        return expected

    def _present(self, sha: str, size: int) -> bool:
        # A file of the wrong size under a final name can only be damage; rewriting repairs it.
        try:
            return int(self.fs.size(self.path(sha))) == size
        except FileNotFoundError:
            return False

    @contextmanager
    def _staged(self, sha: str, verify=None) -> Iterator[BinaryIO]:
        final = self.path(sha)
        folder = final.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.tmp-{sha[:16]}-{uuid.uuid4().hex}"
        try:
            with self.fs.open(temporary, "wb") as handle:
                yield handle
                if self.is_local:
                    # Durable before the rename: otherwise a crash could leave the final name
                    # pointing at an empty file.
                    handle.flush()
                    os.fsync(handle.fileno())
            if verify is not None and verify.hexdigest() != sha:
                raise ArtifactCorrupted(f"the source changed while it was stored (expected {sha})")
            self.fs.mv(temporary, final)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)

    # Reading; every path checks the hash.

    def get_bytes(self, sha: str) -> bytes:
        data = self._read_all(sha)
        if hashlib.sha256(data).hexdigest() != sha:
            raise ArtifactCorrupted(f"artifact {sha} does not match its hash")
        return data

    def verify(self, sha: str) -> None:
        """Raise ArtifactMissing or ArtifactCorrupted unless the stored bytes hash to `sha`."""
        digest = hashlib.sha256()
        try:
            with self.fs.open(self.path(sha), "rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {sha} is not in the store") from None
        if digest.hexdigest() != sha:
            raise ArtifactCorrupted(f"artifact {sha} does not match its hash")

    def open_verified(self, sha: str) -> IO[bytes]:
        """A seekable binary handle on the artifact, opened after its hash was checked (readers
        such as Parquet seek, so the check cannot wait for the end of a stream). Use it as a
        context manager."""
        self.verify(sha)
        try:
            return self.fs.open(self.path(sha), "rb")
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {sha} is not in the store") from None

    def _read_all(self, sha: str) -> bytes:
        try:
            with self.fs.open(self.path(sha), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {sha} is not in the store") from None

    # Deleting.

    def delete(self, sha: str) -> bool:
        """Remove the bytes; True when something was removed. Unlearning relies on this to
        destroy weights and data files that still hold an erased subject."""
        try:
            self.fs.rm(self.path(sha))
        except FileNotFoundError:
            return False
        return True


class ScratchStore(ArtifactStore):
    """Writes stay in this process's memory; reads of anything not written here go to `base`.
    What a rehearsal trains (workers/rehearsal.py) lives here and never reaches the real store:
    nothing it made can be served, adopted or mistaken for a live artifact."""

    def __init__(self, base: ArtifactStore):
        super().__init__(f"memory://obliviate-scratch/{uuid.uuid4().hex}")
        self.base = base

    def exists(self, sha: str) -> bool:
        return super().exists(sha) or self.base.exists(sha)

    def verify(self, sha: str) -> None:
        (super() if super().exists(sha) else self.base).verify(sha)

    def open_verified(self, sha: str) -> IO[bytes]:
        return super().open_verified(sha) if super().exists(sha) else self.base.open_verified(sha)

    def _read_all(self, sha: str) -> bytes:
        try:
            return super()._read_all(sha)
        except ArtifactMissing:
            return self.base._read_all(sha)

    def discard(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


_stores: dict[str, ArtifactStore] = {}
_stores_lock = threading.Lock()
_scratch: contextvars.ContextVar[ScratchStore | None] = contextvars.ContextVar("obliviate_scratch_store", default=None)


@contextmanager
def scratch() -> Iterator[ScratchStore]:
    """Within the block, `get_store()` answers a ScratchStore over the real one; its writes are
    dropped at the end."""
    store = ScratchStore(get_store())
    token = _scratch.set(store)
    try:
        yield store
    finally:
        _scratch.reset(token)
        store.discard()


def store_for(url: str) -> ArtifactStore:
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = ArtifactStore(url)
        return store


def get_store() -> ArtifactStore:
    """The store of the current settings. Keyed by URL rather than cached once, because tests
    (and a CLI run with another data dir) change the settings inside one process. Inside
    `scratch()`, the scratch store over it."""
    return _scratch.get() or store_for(get_settings().artifacts_url)
