"""`obliviate certificate verify FILE`: check a certificate of erasure offline. The verdict comes
from app/certificates/verification.py; this command only finds the keys to trust."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli.common import EXIT_USAGE, console, err_console, fail
from app.config import get_settings

certificate_app = typer.Typer(no_args_is_help=True, help="Certificates of erasure and of remediation.")


def _given_keys(value: str):
    """A base64 public key, a file holding one, or a key file from `obliviate signing-key export`
    (or GET /v1/certificates/keys)."""
    from app.certificates import keys
    from app.certificates.verification import parse

    candidate = Path(value)
    text = candidate.read_text().strip() if candidate.is_file() else value.strip()
    try:
        return keys.ring_from_document(parse(text.encode())) if text.startswith("{") else keys.single(text)
    except (UnicodeDecodeError, ValueError) as exc:
        err_console.print(f"--public-key is neither a base64 Ed25519 public key nor a signing-key file ({exc}).",
                          soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_USAGE) from None


def _service_keys():
    """In the embedded layout this machine holds the service itself: its own keys are trusted.
    Elsewhere the verifier has none of its own, and a key must be given."""
    settings = get_settings()
    if not settings.embedded:
        return None
    from app import signing
    from app.certificates import keys

    database = settings.database_url.removeprefix("sqlite:///")
    if not Path(database).is_file():
        public = signing.service_public_key_if_present()
        return keys.single(public) if public else None
    from app.cli.common import ensure_schema
    from app.db import session_scope

    ensure_schema(settings)
    with session_scope() as session:
        return keys.ring(session) or None


@certificate_app.command("verify")
def certificate_verify(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="The JSON from GET /v1/erasure-requests/{id}/certificate."),
    public_key: str = typer.Option(
        None, "--public-key",
        help="The keys to trust: the signer's Ed25519 public key (base64, from GET /v1/keys/signing), a file "
             "holding it, or a key file from `obliviate signing-key export` (GET /v1/certificates/keys). "
             "Without it, the embedded layout trusts the service's own keys; elsewhere the signature is not "
             "checked (exit 3).",
    ),
) -> None:
    """Verify the Ed25519 signature. Exit 0: VALID; 1: INVALID; 3: signature not checked (no
    trusted key); 2: usage error."""
    from app.certificates.remediation import TYPE as REMEDIATION_TYPE
    from app.certificates.verification import EXIT_CODES, Verdict, model_summaries, scope_summary, verify_bytes

    trusted = _given_keys(public_key) if public_key else _service_keys()
    result = verify_bytes(file.read_bytes(), trusted)
    if result.verdict is Verdict.INVALID:
        err_console.print(f"INVALID: {result.reason}", soft_wrap=True, markup=False)
    elif result.verdict is Verdict.UNCHECKED:
        err_console.print(f"SIGNATURE NOT CHECKED: {result.reason}. Pass --public-key with the service's key "
                          "or key file.", soft_wrap=True, markup=False)
    else:
        body = result.certificate or {}
        if body.get("type") == REMEDIATION_TYPE:
            # A certificate of remediation (docs/remediation.md): same signature, its own body.
            console.print(f"VALID certificate of remediation for request {body.get('remediation_id')} "
                          f"({body.get('kind')}, {body.get('counts', {}).get('records')} records, completed "
                          f"{body.get('completed_at')}), key {result.key_id}", soft_wrap=True, markup=False)
            for entry in body.get("models") or ():
                console.print(f"VALID model {entry.get('model')}: {entry.get('method')}, verdict "
                              f"{entry.get('verdict') or 'not recorded'}", soft_wrap=True, markup=False)
        else:
            console.print(f"VALID certificate of erasure for request {body.get('request_id')} "
                          f"({body.get('outcome')}, completed {body.get('completed_at')}), key {result.key_id}",
                          soft_wrap=True, markup=False)
            for summary in model_summaries(body):
                console.print(f"VALID {summary.describe()}", soft_wrap=True, markup=False)
            scope = scope_summary(body)
            for line in scope.describe() if scope is not None else ():
                console.print(f"VALID {line}", soft_wrap=True, markup=False)
        for note in result.notes:
            console.print(f"note: {note}", soft_wrap=True, markup=False)
    raise typer.Exit(EXIT_CODES[result.verdict])


@certificate_app.command("subject-digest")
def certificate_subject_digest(
    client: str = typer.Option(None, "--client", help="The client whose certificates to check against "
                               "(default: the certificate's own `client`)."),
    certificate: Path = typer.Option(None, "--certificate", exists=True, dir_okay=False, readable=True,
                                     help="A certificate of format 3: say whether its digest is this person's."),
) -> None:
    """The `subject_key_digest` a format-3 certificate of CLIENT carries for a person, from their
    identifiers read on stdin as a JSON object ({"email": "..."}), as a request names them. The
    identifiers are never printed or logged. Exit 0: the digest (and, with --certificate, it
    matches); 1: it does not match; 2: usage error."""
    import sys

    from app.certificates import subject
    from app.certificates.verification import parse
    from app.cli.common import check_secret
    from app.pseudonym import IdentifierError, subject_keys

    check_secret(get_settings())
    body: dict = {}
    if certificate is not None:
        try:
            document = parse(certificate.read_bytes())
            body = document["certificate"] if isinstance(document, dict) and isinstance(document.get("certificate"), dict) else {}
        except (UnicodeDecodeError, ValueError):
            body = {}
        if body.get("format_version") != 3:
            raise fail("the certificate is not of format 3: only format 3 binds the subject to its client", EXIT_USAGE)
        client = client or body.get("client")
    if not client:
        raise fail("give --client, or a --certificate that names one", EXIT_USAGE)
    try:
        identifiers = parse(sys.stdin.buffer.read())
        if not isinstance(identifiers, dict) or not identifiers:
            raise ValueError("not an object")
        keys = subject_keys(identifiers)
    except IdentifierError:
        raise fail("an identifier on stdin is not valid for its kind", EXIT_USAGE) from None
    except (UnicodeDecodeError, ValueError):
        raise fail('stdin must be a JSON object of identifiers, e.g. {"email": "..."}', EXIT_USAGE) from None
    derived = subject.client_key(client)
    console.print(subject.digest_with(derived, keys), soft_wrap=True, markup=False)
    if certificate is None:
        return
    carried = body.get("subject_key_digest")
    if body.get("client") != client or not isinstance(carried, str) or not subject.confirms(derived, keys, carried):
        raise fail(f"does not match: the certificate of client {body.get('client')!r} carries another subject")
    console.print(f"matches: the certificate of client {client!r} names this person", soft_wrap=True, markup=False)
