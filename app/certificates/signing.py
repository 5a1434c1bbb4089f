"""Ed25519 signing of certificates, with the key that signs now (app/certificates/keys.py:
the service key of app/signing.py until the first rotation). Verification is in
app/certificates/verification.py."""

from __future__ import annotations

import base64

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from app.audit.chain import canonical_json
from app.certificates import keys
from app.signing import key_id, private_key, public_key_b64

__all__ = [
    "ALGORITHM", "FORMAT_VERSION", "canonical_bytes", "document_bytes", "format_of", "key_id", "private_key",
    "public_key_b64", "sign_body", "verify_document",
]

ALGORITHM = keys.ALGORITHM
# Certificates of format 2 on are signed over their RFC 8785 (JCS) canonical form, so whitespace
# and key order do not matter, only values. Format 1 (no `format_version` field, issued before) was
# signed over Python's sorted compact JSON and is checked byte for byte as issued. Format 3 binds
# the subject to the client and adds the scope, the copies downloaded and each model's method kind
# (app/certificates/service.py); it is signed as format 2 is.
FORMAT_VERSION = 3
FORMATS = (1, 2, 3)


def format_of(body) -> int:
    version = body.get("format_version", 1) if isinstance(body, dict) else 1
    if type(version) is not int or version not in FORMATS:  # not True, not 2.0
        raise ValueError(f"unknown certificate format_version {version!r}")
    return version


def canonical_bytes(value, version: int) -> bytes:
    return rfc8785.dumps(value) if version >= 2 else canonical_json(value)


def document_bytes(document: dict) -> bytes:
    """The canonical bytes of a whole signed document: what is served, and what the
    `certificate.issued` event's digest covers."""
    return canonical_bytes(document, format_of(document.get("certificate")))


def sign_body(body: dict, session: Session) -> dict:
    """The signed document: {"certificate": body, "signature": {...}}, by the key that signs now."""
    public, key = keys.active(session)
    signature = key.sign(canonical_bytes(body, format_of(body)))
    return {
        "certificate": body,
        "signature": {"algorithm": ALGORITHM, "key_id": key_id(public), "public_key": public,
                      "value": base64.b64encode(signature).decode()},
    }


# Exactly these fields: anything beside them is outside the signature, so a reader could be shown
# a note ("revoked", "superseded") that no one signed.
DOCUMENT_FIELDS = frozenset({"certificate", "signature"})
SIGNATURE_FIELDS = frozenset({"algorithm", "key_id", "public_key", "value"})


def verify_document(document: object, trusted_public_key_b64: str | None = None) -> tuple[bool, str]:
    """The signature check: exactly the signed fields, a `key_id` that names the carried key, and
    the signature under `trusted_public_key_b64` (which must be the carried key) or, without it,
    under the carried key, which proves integrity but not origin. Whom to trust, and when, is
    decided in app/certificates/verification.py."""
    if not isinstance(document, dict) or set(document) != DOCUMENT_FIELDS:
        return False, "the document must hold exactly `certificate` and `signature` (a field outside the signed body)"
    body, signature = document["certificate"], document["signature"]
    if not isinstance(signature, dict) or set(signature) != SIGNATURE_FIELDS:
        return False, ("the signature must hold exactly algorithm, key_id, public_key and value "
                       "(a field outside the signed body)")
    if signature["algorithm"] != ALGORITHM:
        return False, "unknown signature algorithm"
    try:
        carried = keys.public_key_of(signature["public_key"])
        if signature["key_id"] != key_id(carried):
            return False, "the key_id does not name the public key the certificate carries"
        if trusted_public_key_b64 is not None and carried != trusted_public_key_b64:
            return False, "signed by a different key than the trusted one"
        Ed25519PublicKey.from_public_bytes(base64.b64decode(carried)).verify(
            base64.b64decode(signature["value"], validate=True), canonical_bytes(body, format_of(body))
        )
    except InvalidSignature:
        return False, "signature does not match the certificate"
    except (TypeError, ValueError) as exc:
        return False, f"malformed certificate ({type(exc).__name__})"
    return True, "valid"
