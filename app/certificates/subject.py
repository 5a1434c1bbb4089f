"""The subject on a certificate of format 3, bound to its client: an HMAC-SHA256 of the request's
subject keys under a key derived for that client alone, so one client's certificate never
"proves" an erasure by another, and two clients' certificates for one person cannot be linked.

    client key = HKDF-SHA256(OBLIVIATE_SECRET_KEY, salt=SALT, info=client, 32 bytes)
    digest     = HMAC-SHA256(client key, "kind:subject key" lines in kind order)

The stored subject keys and the lineage look-up's `subject_digest` are unchanged. Whoever holds a
client's derived key and the subject keys can confirm a digest (`confirms`); the service does it
from the identifiers with `obliviate certificate subject-digest`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import get_settings
from app.pseudonym import subject_keys_text

# Sets this derivation apart from every other use of the secret key (the subject keys are HMACs
# under it directly).
SALT = b"obliviate certificate subject digest"
SCHEME = "HMAC-SHA256(HKDF-SHA256(secret key, client), subject keys)"


def client_key(client: str, secret: bytes | None = None) -> bytes:
    """The client's derived key; `client` as stored on its requests (already normalised)."""
    secret = secret if secret is not None else get_settings().resolved_secret_key()
    return HKDF(algorithm=SHA256(), length=32, salt=SALT, info=client.encode()).derive(secret)


def digest_with(derived_key: bytes, keys: Mapping[str, str]) -> str:
    return hmac.digest(derived_key, subject_keys_text(keys), "sha256").hex()


def client_digest(client: str, keys: Mapping[str, str], secret: bytes | None = None) -> str:
    """The certificate's `subject_key_digest` for these subject keys (kind → key)."""
    return digest_with(client_key(client, secret), keys)


def confirms(derived_key: bytes, keys: Mapping[str, str], digest: str) -> bool:
    """Whether `digest` is the one these subject keys give under the client's derived key."""
    return hmac.compare_digest(digest_with(derived_key, keys), digest)
