"""Ed25519 signing of certificates, with the server's signing key (app/signing.py), which also
signs the audit checkpoints."""

from __future__ import annotations

import base64

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit.chain import canonical_json
from app.signing import key_id, private_key, public_key_b64

__all__ = [
    "ALGORITHM", "FORMAT_VERSION", "canonical_bytes", "document_bytes", "format_of", "key_id", "private_key",
    "public_key_b64", "sign_body", "verify_document",
]

ALGORITHM = "Ed25519"
# Certificates of format 2 are signed over their RFC 8785 (JCS) canonical form, so whitespace and
# key order do not matter, only values. Format 1 (no `format_version` field, issued before) was
# signed over Python's sorted compact JSON and is checked byte for byte as issued.
FORMAT_VERSION = 2


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
