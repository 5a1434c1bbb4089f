"""Verifying a certificate of erasure: the one place that decides VALID, INVALID or "signature not
checked", for `obliviate certificate verify`, `POST /v1/certificates/verify` and the dashboard.
The signature itself is checked by `signing.verify_document`, where a new format is added (with
`signing.format_of`); this module decides which keys to trust, and when.

A signature proves origin only under a key the verifier already trusts: one given by the
auditor, a key file they kept, or the service's own keys. The key a certificate carries is
checked for consistency (its `key_id`, its signature) but never trusted on its own word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from app.audit.chain import canonical_json
from app.certificates import signing
from app.certificates.keys import PublishedKey, parse_time
from app.certificates.signing import format_of
# A retired key's last certificates may carry a time a little after its retirement when the
# clocks of the host that rotated and the worker that signed differ.
CLOCK_SKEW = timedelta(minutes=5)


class Verdict(Enum):
    VALID = "valid"
    INVALID = "invalid"
    UNCHECKED = "signature not checked"


# The command's exit status for each verdict (2 is a usage error).
EXIT_CODES = {Verdict.VALID: 0, Verdict.INVALID: 1, Verdict.UNCHECKED: 3}


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    reason: str
    key_id: str | None = None
    notes: tuple[str, ...] = field(default=())
    # The signed body, when VALID.
    certificate: Mapping[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return self.verdict is Verdict.VALID


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # With a key twice, a reader and the verifier could each see another value.
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> object:
    """Strict JSON: no duplicate keys, no NaN or Infinity; raises ValueError (or
    UnicodeDecodeError) otherwise. A number must be written with the digits its value holds and
    no more: two literals that read as one double would otherwise sign alike, so a changed last
    digit of a figure would still verify."""
    return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_exact_float)


def _exact_float(literal: str) -> float:
    value = float(literal)
    if Decimal(literal) != Decimal(repr(value)):
        raise ValueError("a number carries more digits than its value holds")
    return value


def _invalid(reason: str, identifier: str | None = None) -> Verification:
    return Verification(Verdict.INVALID, reason, identifier)


def verify_bytes(raw: bytes, trusted: Mapping[str, PublishedKey] | None) -> Verification:
    """A certificate file as issued. Format 2 on is signed over its RFC 8785 form, so any layout
    of the same values verifies; format 1 was issued in Python's canonical form and is checked
    byte for byte."""
    try:
        document = parse(raw)
        version = format_of(document.get("certificate")) if isinstance(document, dict) else 1
    except (UnicodeDecodeError, ValueError):
        return _invalid("the file is not a JSON certificate (malformed, duplicate keys or unknown format)")
    if version == 1 and raw.rstrip(b"\n") != canonical_json(document):
        return _invalid("the file is not byte-for-byte the certificate that was issued (altered or re-formatted)")
    return verify(document, trusted)


def intact(document: object) -> Verification:
    """The structure, and the signature under the key the document carries: INVALID, or
    UNCHECKED (consistent, but that key could be anyone's)."""
    ok, reason = signing.verify_document(document)
    identifier = _carried_key_id(document)
    if not ok:
        return _invalid(reason, identifier)
    return Verification(Verdict.UNCHECKED, "signature not checked: the certificate is intact under the key it "
                        "carries, but no trusted key was given, and that key could be anyone's", identifier)


def _carried_key_id(document: object) -> str | None:
    signature = document.get("signature") if isinstance(document, dict) else None
    identifier = signature.get("key_id") if isinstance(signature, dict) else None
    return identifier if isinstance(identifier, str) else None


def _signed_at(body: object) -> datetime | None:
    if not isinstance(body, dict):
        return None
    try:
        return parse_time(body.get("issued_at") or body.get("completed_at"))
    except ValueError:
        return None


def verify(document: object, trusted: Mapping[str, PublishedKey] | None) -> Verification:
    """`trusted`: the keys the verifier trusts, by key id (a single key, a kept key file or the
    service's ring); None when it has none, which can never give VALID."""
    checked = intact(document)
    if checked.verdict is Verdict.INVALID or trusted is None:
        return checked
    assert isinstance(document, dict)  # intact() accepted it
    identifier, carried = document["signature"]["key_id"], document["signature"]["public_key"]
    key = trusted.get(identifier)
    if key is None or key.public_key != carried:
        return _invalid(f"signed by key {identifier}, which is not a trusted key", identifier)
    signed_at = _signed_at(document["certificate"])
    when = signed_at.isoformat() if signed_at else "an unknown time"
    notes: list[str] = []
    if key.revoked_from is not None:
        if signed_at is None or signed_at >= key.revoked_from:
            return _invalid(f"key {identifier} was revoked from {key.revoked_from.isoformat()} and signed this "
                            f"certificate at {when}", identifier)
        notes.append(f"key {identifier} was revoked from {key.revoked_from.isoformat()}; this certificate was "
                     f"signed before, at {when}: its audit anchoring (`obliviate audit verify`) confirms the time")
    if key.valid_until is not None and (signed_at is None or signed_at > key.valid_until + CLOCK_SKEW):
        return _invalid(f"key {identifier} was retired on {key.valid_until.isoformat()} and signed this "
                        f"certificate at {when}", identifier)
    return Verification(Verdict.VALID, "valid", identifier, tuple(notes), document["certificate"])


# The exact methods of the releases that issued formats 1 and 2, which did not name a method's
# kind: frozen with those formats (format 3 states `method_kind` in the body).
_EXACT_BEFORE_FORMAT_3 = frozenset({"retrain", "sisa", "none_needed"})


@dataclass(frozen=True)
class ModelSummary:
    """What a certificate says of one model: its method's kind and the verdict on it (the
    request's verdict for an approximate method, the sanity check's for an exact one)."""

    model: str
    method: str | None
    method_kind: str
    verdict: str | None

    def describe(self) -> str:
        label = "sanity check" if self.method_kind == "exact" else "verdict"
        method = f" ({self.method})" if self.method else ""
        return f"model {self.model}: {self.method_kind}{method}, {label} {self.verdict or 'not recorded'}"


def _checks_verdict(block: object) -> str | None:
    """A verification block's verdict: the statistical checks' (`verdicts.verdict`) or, as format
    2 first wrote it, `passed`."""
    if not isinstance(block, Mapping):
        return None
    verdicts = block.get("verdicts")
    if isinstance(verdicts, Mapping) and isinstance(verdicts.get("verdict"), str):
        return str(verdicts["verdict"])
    passed = block.get("passed")
    return None if not isinstance(passed, bool) else ("pass" if passed else "fail")


def _summary(entry: Mapping[str, Any], version: int) -> ModelSummary:
    method = entry.get("method") if isinstance(entry.get("method"), str) else None
    name = str(entry.get("model") or entry.get("model_id") or "?")
    if version >= 3:
        kind = str(entry.get("method_kind") or "unknown")
        verdict = entry.get("verdict") if kind == "approximate" else _checks_verdict(entry.get("sanity_check"))
        return ModelSummary(name, method, kind, verdict if isinstance(verdict, str) else None)
    kind = "exact" if method is None or method in _EXACT_BEFORE_FORMAT_3 else "approximate"
    return ModelSummary(name, method, kind, _checks_verdict(entry.get("verification")))


def model_summaries(body: Mapping[str, Any]) -> tuple[ModelSummary, ...]:
    """Each model of a verified body, for formats 1 to 3."""
    version = format_of(body)
    models = body.get("models")
    return tuple(_summary(entry, version) for entry in models or () if isinstance(entry, Mapping))


@dataclass(frozen=True)
class ScopeSummary:
    """What a format-3 certificate says was searched: the identifier kinds (the request's and
    those reached through links) and each dataset and model looked in, with whether it held the
    person."""

    kinds: tuple[str, ...]
    resolved_kinds: tuple[str, ...]
    checked: tuple[tuple[str, str, int | None, bool], ...]  # (dataset|model, name, version, held)

    def describe(self) -> tuple[str, ...]:
        linked = sorted(set(self.resolved_kinds) - set(self.kinds))
        lines = [f"searched identifier kinds {', '.join(self.kinds) or 'none'}"
                 + (f" (and, through links, {', '.join(linked)})" if linked else "")]
        if not self.checked:
            lines.append("searched no dataset or model (the client had none)")
        for kind, name, version, held in self.checked:
            at = f" v{version}" if version is not None else ""
            lines.append(f"searched {kind} {name}{at}: {'held the person' if held else 'did not hold the person'}")
        return tuple(lines)


def _names(value: object) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def scope_summary(body: Mapping[str, Any]) -> ScopeSummary | None:
    """The scope of a verified body; None for formats 1 and 2, which state none."""
    scope = body.get("scope")
    if format_of(body) < 3 or not isinstance(scope, Mapping):
        return None
    checked: list[tuple[str, str, int | None, bool]] = []
    for kind in ("dataset", "model"):
        for entry in scope.get(f"{kind}s") or ():
            if isinstance(entry, Mapping):
                version = entry.get("version")
                checked.append((kind, str(entry.get("name")), version if isinstance(version, int) else None,
                                entry.get("held_subject") is True))
    kinds = _names(scope.get("identifier_kinds"))
    return ScopeSummary(kinds, _names(scope.get("resolved_kinds")) or kinds, tuple(checked))
