"""Subject pseudonyms: subject_key = HMAC-SHA256(SECRET_KEY, kind ‖ normalised value).

This is the only place raw identifiers are handled; everything downstream sees subject keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping

from app.config import get_settings
from app.pii import has_invisible, identifier_candidates

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_IDENTIFIER_LENGTH = 512
# Separates kind from value inside the MAC input, so ("ab", "c") and ("a", "bc") differ.
_SEPARATOR = b"\x1f"


class IdentifierError(ValueError):
    """Raised with a message that names the kind but never the value."""


def normalise_identifier(kind: str, value: str) -> str:
    if not isinstance(value, str):
        raise IdentifierError(f"identifier '{kind}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a "\ud800" JSON escape
        raise IdentifierError(f"identifier '{kind}' is not valid Unicode text") from None
    text = unicodedata.normalize("NFKC", value).strip()
    if kind == "email":
        text = text.lower()
        if "@" not in text or text.startswith("@") or text.endswith("@") or " " in text:
            raise IdentifierError("identifier 'email' is not an email address")
    elif kind == "phone":
        text = re.sub(r"\D", "", text)
        if not 6 <= len(text) <= 20:
            raise IdentifierError("identifier 'phone' must have 6 to 20 digits")
    if not text:
        raise IdentifierError(f"identifier '{kind}' is empty")
    if len(text) > MAX_IDENTIFIER_LENGTH:
        raise IdentifierError(f"identifier '{kind}' is longer than {MAX_IDENTIFIER_LENGTH} characters")
    return text


def validate_identifier(kind: str, value: str) -> None:
    """Intake's checks on top of normalisation. They only refuse: the bytes fed to the MAC for an
    accepted value stay exactly normalise_identifier's, which is frozen (subject keys of requests
    and tombstones already stored could never be recomputed otherwise)."""
    normalise_identifier(kind, value)
    # Surrounding whitespace (a tab, a line break) is trimmed by normalisation and harmless.
    text = unicodedata.normalize("NFKC", value).strip()
    if has_invisible(value.strip()) or has_invisible(text):
        raise IdentifierError(f"identifier '{kind}' contains control or invisible characters")
    if kind == "email":
        _check_email(text)
    elif kind == "phone":
        _check_phone(text)


def _check_email(text: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError:  # its message quotes parts of the address
        raise IdentifierError("identifier 'email' is not a valid e-mail address") from None


def _check_phone(text: str) -> None:
    import phonenumbers

    # Normalisation keeps the digits alone, so "+1 555..." and "1555..." are one subject: a
    # number without "+" may be the international digits, or national in the default region.
    digits = re.sub(r"\D", "", text)
    region = get_settings().phone_default_region.upper() or None
    readings = [("+" + digits[2:], None)] if text.startswith("00") else [(text, None if text.startswith("+") else region)]
    if not text.startswith(("+", "00")):
        readings.append(("+" + digits, None))
    for reading, reading_region in readings:
        try:
            number = phonenumbers.parse(reading, reading_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return
    raise IdentifierError("identifier 'phone' is not a possible phone number (give it with its country code, e.g. +44 20 7946 0958)")


def subject_key(kind: str, value: str, secret: bytes | None = None) -> str:
    if not KIND_PATTERN.match(kind):
        raise IdentifierError("identifier kinds are lower-case words (letters, digits, underscore)")
    key = secret if secret is not None else get_settings().resolved_secret_key()
    message = kind.encode() + _SEPARATOR + normalise_identifier(kind, value).encode()
    # The one-shot form: the same MAC as hmac.new(...).hexdigest(), without building an HMAC object.
    return hmac.digest(key, message, "sha256").hex()


def subject_keys(identifiers: dict[str, str], secret: bytes | None = None) -> dict[str, str]:
    key = secret if secret is not None else get_settings().resolved_secret_key()
    return {kind: subject_key(kind, value, key) for kind, value in sorted(identifiers.items())}


def names_subject(text: str, keys: dict[str, str], secret: bytes | None = None) -> bool:
    """Whether free text given after intake (a hold, deny or extend reason) holds one of a
    request's own identifiers, now known only by their subject keys: every reading of the text
    as an identifier of each kind is keyed exactly as intake keyed it, and compared."""
    key = secret if secret is not None else get_settings().resolved_secret_key()
    for kind, stored in keys.items():
        for candidate in identifier_candidates(text, kind):
            try:
                if hmac.compare_digest(subject_key(kind, candidate, key), stored):
                    return True
            except IdentifierError:
                continue
    return False


def subject_keys_text(keys: Mapping[str, str]) -> bytes:
    """A request's subject keys as one message, in kind order: what its digests are taken over."""
    return "\n".join(f"{kind}:{key}" for kind, key in sorted(keys.items())).encode()


def subject_digest(keys: dict[str, str]) -> str:
    """One digest for all of a request's subject keys, the same for every client (the lineage
    look-up's; certificates of format 3 carry a per-client one, app/certificates/subject.py)."""
    return hashlib.sha256(subject_keys_text(keys)).hexdigest()


# Separators people write phone numbers with; a tail of at least this many digits (the local
# part, without a country code) is still the number.
_PHONE_SEPARATORS = r"[\s().\-/]*"
_MIN_PHONE_TAIL = 7


def _phone_pattern(digits: str) -> re.Pattern[str]:
    """The number, or any tail of it of at least _MIN_PHONE_TAIL digits, however it is written."""
    split = max(len(digits) - _MIN_PHONE_TAIL, 0)
    optional_head = ""
    for digit in digits[:split]:
        optional_head = f"(?:{optional_head}{digit}{_PHONE_SEPARATORS})?"
    return re.compile(r"(?<!\d)\+?" + optional_head + _PHONE_SEPARATORS.join(digits[split:]) + r"(?!\d)")


def redact(text: str | None, identifiers: dict[str, str]) -> str | None:
    """Remove the request's own identifiers from free text (reasons) before it is stored: as
    written, normalised (any case), and phone numbers in any formatting."""
    if text is None:
        return None
    for kind, value in identifiers.items():
        if not isinstance(value, str) or not value.strip():
            continue
        forms = {value.strip()}
        try:
            forms.add(normalise_identifier(kind, value))
        except IdentifierError:
            pass
        for form in sorted(forms, key=len, reverse=True):
            text = re.sub(re.escape(form), "[redacted]", text, flags=re.IGNORECASE)
        if kind == "phone":
            digits = re.sub(r"\D", "", value)
            if digits:
                text = _phone_pattern(digits).sub("[redacted]", text)
    return text
