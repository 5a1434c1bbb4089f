"""Ed25519 signing of certificates. The private key comes from OBLIVIATE_SIGNING_KEY_PATH (a PEM
file every API and worker process can read) or is generated once under the data directory."""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.audit.chain import canonical_json
from app.config import get_settings

ALGORITHM = "Ed25519"
# Certificates of format 2 are signed over their RFC 8785 (JCS) canonical form, so whitespace and
# key order do not matter, only values. Format 1 (no `format_version` field, issued before) was
# signed over Python's sorted compact JSON and is checked byte for byte as issued.
FORMAT_VERSION = 2


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


def format_of(body) -> int:
    version = body.get("format_version", 1) if isinstance(body, dict) else 1
    if type(version) is not int or version not in (1, FORMAT_VERSION):  # not True, not 2.0
        raise ValueError(f"unknown certificate format_version {version!r}")
    return version


def canonical_bytes(value, version: int) -> bytes:
    return rfc8785.dumps(value) if version >= 2 else canonical_json(value)


def document_bytes(document: dict) -> bytes:
    """The canonical bytes of a whole signed document: what is served, and what the
    `certificate.issued` event's digest covers."""
    return canonical_bytes(document, format_of(document.get("certificate")))


def sign_body(body: dict) -> dict:
    """The signed document: {"certificate": body, "signature": {...}}."""
    public = public_key_b64()
    signature = private_key().sign(canonical_bytes(body, format_of(body)))
    return {
        "certificate": body,
        "signature": {"algorithm": ALGORITHM, "key_id": key_id(public), "public_key": public,
                      "value": base64.b64encode(signature).decode()},
    }


def verify_document(document: dict, trusted_public_key_b64: str | None = None) -> tuple[bool, str]:
    """Check a signed certificate offline. With `trusted_public_key_b64` the signer must be that
    key; without it, the embedded key is used (integrity only, not origin)."""
    try:
        body = document["certificate"]
        signature = document["signature"]
        public = trusted_public_key_b64 or signature["public_key"]
        if signature.get("algorithm") != ALGORITHM:
            return False, "unknown signature algorithm"
        if trusted_public_key_b64 and signature.get("public_key") != trusted_public_key_b64:
            return False, "signed by a different key than the trusted one"
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(
            base64.b64decode(signature["value"]), canonical_bytes(body, format_of(body))
        )
    except InvalidSignature:
        return False, "signature does not match the certificate"
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"malformed certificate ({type(exc).__name__})"
    return True, "valid"
