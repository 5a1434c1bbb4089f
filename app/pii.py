"""Spotting personal identifiers in free text and metadata (reasons, external ids, keys, URLs).

Text is normalised before it is searched, so that the usual ways of writing an address past a
naive filter still match: percent-encoding (`jane%40example.org`), HTML entities, full-width
and other compatibility forms (`＠`), invisible characters inside a word (zero-width spaces),
and spelled-out separators (`jane (at) example (dot) org`). What is found is only ever reported
by its kind, never quoted.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Iterable
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


@functools.cache
def _invisible_pattern() -> re.Pattern[str]:
    """One character class of the invisible characters, for whole texts (a per-character loop
    costs milliseconds on a long reason). Built once: format, control and separator characters
    are in these planes; private-use and surrogate blocks are ranges. Unassigned code points
    are left to is_invisible, which identifiers (short) go through."""
    wanted = set(_INVISIBLE_EXTRA)
    for start, stop in ((0, 0x20000), (0xE0000, 0xE1000)):
        wanted.update(code for code in range(start, stop)
                      if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp") and chr(code) not in "\t\n\r")
    ranges = [(0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD)]
    single: list[tuple[int, int]] = []
    for code in sorted(wanted):
        if single and single[-1][1] == code - 1:
            single[-1] = (single[-1][0], code)
        else:
            single.append((code, code))
    ranges += single
    return re.compile("[" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in ranges) + "]")


def has_invisible(text: str) -> bool:
    """True if `text` holds a control or invisible character."""
    if text.isascii():  # the usual case: only the controls are invisible there
        return not text.isprintable()
    return any(is_invisible(char) for char in text)


_SPELLED_AT = re.compile(r"\s*[(\[{<]\s*at\s*[)\]}>]\s*")
_SPELLED_DOT = re.compile(r"\s*[(\[{<]\s*dot\s*[)\]}>]\s*")
# "jane at example dot org": " at " alone is an ordinary word, so only with a spelled-out dot.
# Each pattern starts at a token's beginning (the look-behind), so a search stays linear.
_WORDY_ADDRESS = re.compile(r"(?<![\w.+'-])([\w.+'-]+)\s+at\s+([\w-]+(?:\s+dot\s+[\w-]+)+)")
# "jane at example.org": the word "at" before a dotted name ending in a top-level domain.
_AT_DOMAIN = re.compile(r"(?<![\w.+'-])([\w.+'-]+)\s+at\s+([\w-]+(?:\.[\w-]+)*\.[a-z]{2,})(?![\w-])")
# "jane_at_example_dot_org", "jane-at-example.org": the words glued on with separators.
_GLUED_WORD = re.compile(r"(?<=[^\W_])[_.-]+(at|dot)[_.-]+(?=[^\W_])")
# "jane @ example . org", "jane@@example.org": space and repeats around the separators.
_LOOSE_AT = re.compile(r"\s*@[\s@]*")
_LOOSE_DOMAIN = re.compile(r"@[\w-]+(?:\s*\.\s*[\w-]+)+")
_LOOSE_LOCAL = re.compile(r"(?<![\w.+'-])[\w+'-]+(?:\s*\.\s*[\w+'-]+)+@")
_WHITESPACE = re.compile(r"\s+")
# "%u0040" (the old JavaScript escape) and "\u0040" (a JSON or Python one).
_UNICODE_ESCAPE = re.compile(r"[%\\]u([0-9a-fA-F]{4})")
# ASCII controls: line breaks and tabs become spaces, the others go.
_ASCII_CONTROLS = {code: (" " if chr(code) in "\t\n\r" else None) for code in [*range(0x20), 0x7F]}
# Look-alikes NFKC leaves alone: ideographic and other full stops, hyphens and dashes (NFKC
# turns the non-breaking hyphen U+2011 into U+2010, not into "-"), and the minus sign.
_LOOK_ALIKES = {
    **dict.fromkeys(map(ord, "\u3002\uff61\ufe52\u2024\u06d4"), "."),
    **dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63"), "-"),
}


def _decoded(text: str) -> str:
    for _ in range(3):  # doubly encoded input, e.g. %2540
        if "%" not in text and "&" not in text and "\\u" not in text:
            break
        decoded = html.unescape(unquote(_UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text), errors="replace"))
        if decoded == text:
            break
        text = decoded
    return text


def normalise_text(text: str) -> str:
    """The form identifiers are searched in: decoded, compatibility-folded, case-folded, with
    invisible characters, look-alike punctuation and spelled-out or spaced-out separators
    resolved."""
    text = _decoded(text)
    if text.isascii():
        text = text.translate(_ASCII_CONTROLS).lower()
    else:
        text = unicodedata.normalize("NFKC", text).translate(_ASCII_CONTROLS).translate(_LOOK_ALIKES)
        text = _invisible_pattern().sub("", text).casefold()
    if "at" in text and any(bracket in text for bracket in "([{<"):
        text = _SPELLED_AT.sub("@", text)
        text = _SPELLED_DOT.sub(".", text)
    if "at" in text or "dot" in text:
        text = _GLUED_WORD.sub(lambda m: f" {m.group(1)} ", text)
    if " dot " in text:
        text = _WORDY_ADDRESS.sub(lambda m: m.group(1) + "@" + re.sub(r"\s+dot\s+", ".", m.group(2)), text)
    if " at " in text:
        text = _AT_DOMAIN.sub(r"\1@\2", text)
    if "@" in text:
        text = _LOOSE_AT.sub("@", text)
        text = _LOOSE_DOMAIN.sub(lambda m: _WHITESPACE.sub("", m.group(0)), text)
        text = _LOOSE_LOCAL.sub(lambda m: _WHITESPACE.sub("", m.group(0)), text)
    return text


_EMAIL = re.compile(r"(?<![\w.+'%!#$&*=?^`{|}~-])[\w.+'%!#$&*=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# Dates and times are digit runs with separators too; they are set aside before phones are sought.
_DATES = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2})?)?|\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# A run of digits and phone separators that does not continue a word (ORD-2026-000123 is an id).
_PHONE_RUN = re.compile(r"(?<![\w+-])(?:\+|00)?\(?\d[\d ().\-/]{4,24}\d\)?(?![\w-])")
_PHONE_SEPARATORS = re.compile(r"[ ().\-/]+")
_DIGITS = re.compile(r"\d")


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
    return identifier_in_normalised(normalise_text(text))


def identifier_in_normalised(normalised: str) -> str | None:
    """find_identifier on text already passed through normalise_text."""
    if "@" in normalised and _EMAIL.search(normalised):
        return "email"
    if not _DIGITS.search(normalised):
        return None
    without_dates = _DATES.sub(" ", normalised)
    if any(_looks_like_phone(match.group(0)) for match in _PHONE_RUN.finditer(without_dates)):
        return "phone"
    return None


# Shorter values match too much ordinary text to be looked for in disguise.
MIN_VALUE_LENGTH = 4
REDACTED = "[redacted]"


# A value is looked for with the text's spaces taken out only from this length on: shorter
# ones would turn up across the words of ordinary text.
MIN_SPACED_VALUE_LENGTH = 8
_WORD_SPLIT = re.compile(r"[\s,;:!?()\[\]{}<>\"]+")


def reveals(text: str, values: Iterable[str]) -> bool:
    """Whether `text` holds an identifier, or one of `values` (a request's own identifiers) in
    any of the forms above, e.g. written with invisible characters, percent-encoded or spaced
    out letter by letter."""
    normalised = normalise_text(text)
    if identifier_in_normalised(normalised):
        return True
    searched = normalised.replace(REDACTED, " ")
    compact = _WHITESPACE.sub("", searched)
    for value in values:
        needle = normalise_text(value).strip()
        if len(needle) >= MIN_VALUE_LENGTH and needle in searched:
            return True
        if len(needle) >= MIN_SPACED_VALUE_LENGTH and _WHITESPACE.sub("", needle) in compact:
            return True
    return False


def identifier_candidates(text: str, kind: str) -> set[str]:
    """What `text` could be read as, for an identifier of `kind`: the strings to key and compare
    with a request's subject keys when its raw identifiers are long gone (reasons given after
    intake). E-mail addresses and phone numbers however disguised or spaced out; for any other
    kind, the words of the text. Runs of single characters count joined ("u s e r 7" → "user7")."""
    words = [word for word in _WORD_SPLIT.split(unicodedata.normalize("NFKC", _decoded(text))) if word]
    spelled: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1:
            run.append(word)
            continue
        if len(run) >= MIN_VALUE_LENGTH:
            spelled.append("".join(run))
        run = []
    if kind in ("email", "phone"):
        normalised = normalise_text(text)
        views = [normalised, _WHITESPACE.sub("", normalised), *map(normalise_text, spelled)]
        pattern = _EMAIL if kind == "email" else _PHONE_RUN
        return {match.group(0) for view in views for match in pattern.finditer(view)}
    candidates = {word.strip(".") for word in words} | set(words) | set(spelled)
    return {candidate for candidate in candidates if candidate}
