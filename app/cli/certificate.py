"""`obliviate certificate verify FILE`: check a certificate of erasure offline."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import typer

from app.cli.common import console, err_console

certificate_app = typer.Typer(no_args_is_help=True, help="Certificates of erasure.")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # With a key twice, a reader and the verifier could each see another value.
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


@certificate_app.command("verify")
def certificate_verify(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="The JSON from GET /v1/erasure-requests/{id}/certificate."),
    public_key: str = typer.Option(
        None, "--public-key",
        help="The signer's Ed25519 public key (base64, from GET /v1/keys/signing) or a file holding it. "
             "Without it the key embedded in the certificate is used: that proves integrity, not origin.",
    ),
) -> None:
    """Verify the Ed25519 signature; exit 0 only if no value of the certificate changed."""
    from app.audit.chain import canonical_json
    from app.certificates.signing import format_of, verify_document

    trusted = None
    if public_key:
        candidate = Path(public_key)
        trusted = candidate.read_text().strip() if candidate.is_file() else public_key.strip()
        try:
            if len(base64.b64decode(trusted, validate=True)) != 32:
                raise ValueError
        except ValueError:
            err_console.print("--public-key is not a base64 Ed25519 public key.")
            raise typer.Exit(2) from None
    raw = file.read_bytes()
    try:
        document = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
        version = format_of(document.get("certificate")) if isinstance(document, dict) else 1
    except (UnicodeDecodeError, ValueError):
        err_console.print("INVALID: the file is not a JSON certificate (malformed, duplicate keys or unknown format).")
        raise typer.Exit(1) from None
    # Format 2 is signed over its RFC 8785 form, so any layout of the same values verifies.
    # Format 1 was issued in Python's canonical form and is checked byte for byte, as before.
    if version == 1 and raw.rstrip(b"\n") != canonical_json(document):
        err_console.print("INVALID: the file is not byte-for-byte the certificate that was issued (altered or re-formatted).")
        raise typer.Exit(1)
    ok, reason = verify_document(document, trusted) if isinstance(document, dict) else (False, "not a certificate")
    if not ok:
        err_console.print(f"INVALID: {reason}")
        raise typer.Exit(1)
    body = document["certificate"]
    console.print(f"VALID certificate of erasure for request {body.get('request_id')} "
                  f"({body.get('outcome')}, completed {body.get('completed_at')}), key {document['signature']['key_id']}"
                  + ("" if trusted else " [embedded key: pass --public-key to check the signer]"), soft_wrap=True, markup=False)
