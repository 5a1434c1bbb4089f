"""Checkpoints as C2SP signed notes (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    — <key name> <base64(key id (4 bytes) ‖ Ed25519 signature)>\\n

The signature covers the text above the blank line. The key id is the first four bytes of
SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), so tools that read Go's `sumdb/note` format (and
`obliviate audit verify --checkpoint`) check it with the verifier key `name+hex id+base64(0x01 ‖ key)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = b"\x01"
DASH = "\u2014"


class NoteError(ValueError):
    """A checkpoint that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    text: str  # the whole signed note

    @property
    def root_hex(self) -> str:
        return self.root_hash.hex()


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    return f"{name}+{key_id(name, public_key).hex()}+{base64.b64encode(ED25519 + public_key).decode()}"


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError("a key name and origin have no spaces and no '+'")
    return name


def sign_checkpoint(origin: str, tree_size: int, root_hash: bytes, key: Ed25519PrivateKey) -> Checkpoint:
    _check_name(origin)
    body = f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"
    public = key.public_key().public_bytes_raw()
    signature = base64.b64encode(key_id(origin, public) + key.sign(body.encode())).decode()
    return Checkpoint(origin, tree_size, root_hash, f"{body}\n{DASH} {origin} {signature}\n")


def open_checkpoint(text: str, public_key: bytes, name: str | None = None) -> Checkpoint:
    """Parse a checkpoint and check its Ed25519 signature by `public_key` under key name `name`
    (the origin when None). Raises NoteError unless a signature line of that key verifies."""
    body, separator, signatures = text.partition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("not a signed note (no blank line before the signatures, or no final newline)")
    body += "\n"
    lines = body.splitlines()
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash")
    origin, size_text, root_text = lines[:3]
    try:
        tree_size = int(size_text)
        root_hash = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("malformed tree size or root hash") from None
    if tree_size < 0 or str(tree_size) != size_text or len(root_hash) != 32:
        raise NoteError("malformed tree size or root hash")
    name = _check_name(name or origin)
    wanted = key_id(name, public_key)
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    for line in signatures[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or parts[1] != name:
            continue
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            continue
        if raw[:4] != wanted:
            continue
        try:
            verifier.verify(raw[4:], body.encode())
        except InvalidSignature:
            raise NoteError("the checkpoint's signature does not verify") from None
        return Checkpoint(origin, tree_size, root_hash, text)
    raise NoteError(f"the checkpoint carries no signature by key '{name}'")
