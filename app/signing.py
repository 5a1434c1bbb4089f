"""The server's Ed25519 signing keys. The service key signs the audit log's checkpoints
(app/audit/checkpoints.py) and, until the first rotation, certificates of erasure. It comes from
OBLIVIATE_SIGNING_KEY_PATH (a PEM file every API and worker process can read) or is generated
once under the data directory. Keys made by `obliviate signing-key rotate` sign certificates
from then on (app/certificates/keys.py); each is a PEM file named by its key id in
`signing_key_dir`, stored like the service key."""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.config import get_settings


def _key_path() -> Path:
    settings = get_settings()
    return Path(settings.signing_key_path) if settings.signing_key_path else settings.data_dir / "signing_key.pem"


def key_dir() -> Path:
    """Where rotated certificate keys live, one `<key id>.pem` each."""
    settings = get_settings()
    return Path(settings.signing_key_dir) if settings.signing_key_dir else settings.data_dir / "signing_keys"


def _write_key(file: Path, key: Ed25519PrivateKey) -> None:
    """Write `key` to `file`, which must not exist (O_EXCL: of processes racing to create it,
    one wins); raises FileExistsError otherwise."""
    file.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


@lru_cache(maxsize=16)
def _read(path: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("the signing key must be an Ed25519 private key")
    return key


def _load(path: str) -> Ed25519PrivateKey:
    file = Path(path)
    if not file.exists():
        if get_settings().signing_key_path:
            raise RuntimeError(f"OBLIVIATE_SIGNING_KEY_PATH points to {file}, which does not exist")
        try:
            _write_key(file, Ed25519PrivateKey.generate())
        except FileExistsError:
            pass
    return _read(path)


def private_key() -> Ed25519PrivateKey:
    return _load(str(_key_path().resolve()))


def service_public_key_if_present() -> str | None:
    """The service key's public half, or None where this machine holds no service key (a
    verifier must never create one)."""
    path = _key_path()
    return public_key_b64(_read(str(path.resolve())).public_key()) if path.is_file() else None


def new_rotated_key() -> tuple[str, Ed25519PrivateKey]:
    """A new certificate key, written to `key_dir()` as `<key id>.pem`: (key id, key)."""
    key = Ed25519PrivateKey.generate()
    identifier = key_id(public_key_b64(key.public_key()))
    _write_key(key_dir() / f"{identifier}.pem", key)
    return identifier, key


def private_key_of(identifier: str) -> Ed25519PrivateKey:
    """The private key with this key id: the service key or a rotated one."""
    service = private_key()
    if key_id(public_key_b64(service.public_key())) == identifier:
        return service
    file = key_dir() / f"{identifier}.pem"
    if not file.is_file():
        raise RuntimeError(f"the private key of signing key {identifier} is not in {key_dir()}")
    return _read(str(file.resolve()))


def public_key_b64(key: Ed25519PublicKey | None = None) -> str:
    key = key or private_key().public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]
