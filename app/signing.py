"""The server's Ed25519 signing key: certificates of erasure (app/certificates/signing.py) and the
audit log's checkpoints (app/audit/checkpoints.py) are signed with it. It comes from
OBLIVIATE_SIGNING_KEY_PATH (a PEM file every API and worker process can read) or is generated
once under the data directory."""

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


@lru_cache(maxsize=4)
def _load(path: str) -> Ed25519PrivateKey:
    file = Path(path)
    if not file.exists():
        if get_settings().signing_key_path:
            raise RuntimeError(f"OBLIVIATE_SIGNING_KEY_PATH points to {file}, which does not exist")
        file.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:  # O_EXCL: processes starting together must end up with one key
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        except FileExistsError:
            pass
    key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("the signing key must be an Ed25519 private key")
    return key


def private_key() -> Ed25519PrivateKey:
    return _load(str(_key_path().resolve()))


def public_key_b64(key: Ed25519PublicKey | None = None) -> str:
    key = key or private_key().public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]
