"""Spotting personal identifiers in free text and metadata (reasons, external ids, keys, URLs).

Text is normalised before it is searched, so that the usual ways of writing an address past a
naive filter still match: percent-encoding (`jane%40example.org`), HTML entities, full-width
and other compatibility forms (`＠`), invisible characters inside a word (zero-width spaces),
and spelled-out separators (`jane (at) example (dot) org`). What is found is only ever reported
by its kind, never quoted.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote

# Characters that render as nothing: format characters (zero-width space and joiners, bidi
# controls, BOM), controls, private-use, surrogates, unassigned and line/paragraph separators,
# plus the few default-ignorable letters and marks outside those categories.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_INVISIBLE_EXTRA = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, 0x2800]
    + list(range(0x180B, 0x1810)) + list(range(0xFE00, 0xFE10)) + list(range(0xE0100, 0xE01F0))
)


def is_invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or ord(char) in _INVISIBLE_EXTRA


def has_invisible(text: str) -> bool:
    """True if `text` holds a control or invisible character."""
    return any(is_invisible(char) for char in text)


_SPELLED_AT = re.compile(r"\s*[(\[{<]\s*at\s*[)\]}>]\s*")
_SPELLED_DOT = re.compile(r"\s*[(\[{<]\s*dot\s*[)\]}>]\s*")
# "jane at example dot org": " at " alone is an ordinary word, so only with a spelled-out dot.
_WORDY_ADDRESS = re.compile(r"([\w.+'-]+)\s+at\s+([\w-]+(?:\s+dot\s+[\w-]+)+)")


def normalise_text(text: str) -> str:
    """The form identifiers are searched in: decoded, compatibility-folded, case-folded, with
    invisible characters and spelled-out separators resolved."""
    for _ in range(3):  # doubly encoded input, e.g. %2540
        decoded = html.unescape(unquote(text, errors="replace"))
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if char in "\t\n\r" else char for char in text if char in "\t\n\r" or not is_invisible(char))
    text = text.casefold()
    text = _SPELLED_AT.sub("@", text)
    text = _SPELLED_DOT.sub(".", text)
    return _WORDY_ADDRESS.sub(lambda m: m.group(1) + "@" + re.sub(r"\s+dot\s+", ".", m.group(2)), text)


_EMAIL = re.compile(r"[\w.+'%!#$&*=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# Dates and times are digit runs with separators too; they are set aside before phones are sought.
_DATES = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# A run of digits and phone separators that does not continue a word (ORD-2026-000123 is an id).
_PHONE_RUN = re.compile(r"(?<![\w+-])(?:\+|00)?\(?\d[\d ().\-/]{4,24}\d\)?(?![\w-])")
_PHONE_SEPARATORS = re.compile(r"[ ().\-/]+")


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(char.isdigit() for char in candidate)
    if not 7 <= digits <= 15 or _IPV4.match(candidate):
        return False
    if candidate.startswith(("+", "00")) or "(" in candidate:
        return True
    # Written in groups like a phone number (555-010-2030, 030 1234 5678), not a bare number.
    return len([group for group in _PHONE_SEPARATORS.split(candidate) if group]) >= 3


def find_identifier(text: str | None) -> str | None:
    """'email' or 'phone' if `text` seems to hold one (in any of the forms above), else None."""
    if not text:
        return None
    normalised = normalise_text(text)
    if _EMAIL.search(normalised):
        return "email"
    without_dates = _DATES.sub(" ", normalised)
    if any(_looks_like_phone(match.group(0)) for match in _PHONE_RUN.finditer(without_dates)):
        return "phone"
    return None


# Shorter values match too much ordinary text to be looked for in disguise.
MIN_VALUE_LENGTH = 4
REDACTED = "[redacted]"


def contains_value(text: str, value: str) -> bool:
    """Whether `value` (an identifier of the request) still appears in `text` once both are
    normalised, e.g. written with invisible characters or percent-encoded."""
    needle = normalise_text(value).strip()
    return len(needle) >= MIN_VALUE_LENGTH and needle in normalise_text(text).replace(REDACTED, " ")
