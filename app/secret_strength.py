"""How guessable OBLIVIATE_SECRET_KEY is, and the start-up check that refuses a guessable one.

A length and a count of distinct characters let through `12345678901234567890123456789012`,
`abcdefghabcdefghabcdefghabcdefgh` and `my-super-secret-key-for-obliviate`. The estimate here
prices a value the way a guesser would try it: a repeated period costs only its first period, a
run like `0123` or `fedc` costs its start and length, a common word costs one pick from the
word list, and only what is left costs its full alphabet per character.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

# Below this many estimated bits a key is refused. 32 random hex characters are 128 bits and
# estimate higher (the alphabet is priced as all lower-case letters and digits); a key made of
# words, runs and repeats estimates far lower.
MIN_SECRET_BITS = 100.0
# Words people build keys from: the usual password words, and the small words between them.
_WORDS = frozenset("""
a an and the of for to in on at by my our your his her its me we you it is be no not or so
key keys secret secrets password passwd pass pwd word words super duper mega ultra hyper very
admin root user login letmein welcome hello world test testing demo dev prod production staging
change changeme replace default example sample dummy fake temp token api app application service
server client data database db private public secure security safe strong random long
obliviate erase erasure forget gdpr ccpa privacy model models train unlearn
qwerty asdf zxcv qwertyuiop asdfgh zxcvbn iloveyou monkey dragon master shadow sunshine
princess football baseball abc abcd xyz foo bar baz qux lorem ipsum one two three four five
six seven eight nine ten hundred thousand love god money summer winter spring autumn
company team project system local host new old first last final my-super
""".split())
_WORD_BITS = math.log2(len(_WORDS))
_LONGEST_WORD = max(map(len, _WORDS))
# Longest value priced piece by piece; beyond it the rest costs its alphabet (no key is that
# long by accident, and the search stays small).
_PRICED_LENGTH = 256

log = logging.getLogger("obliviate.secret")


def _alphabet_bits(value: str) -> float:
    size = 0
    size += 26 if any(c.islower() for c in value) else 0
    size += 26 if any(c.isupper() for c in value) else 0
    size += 10 if any(c.isdigit() for c in value) else 0
    size += 33 if any(not c.isalnum() for c in value) else 0
    return math.log2(max(size, 2))


def _period(value: str) -> int:
    """The shortest p such that the value is its first p characters repeated (the last copy may
    be cut short); len(value) when there is none."""
    for p in range(1, len(value) // 2 + 1):
        if all(value[i] == value[i - p] for i in range(p, len(value))):
            return p
    return len(value)


def _run_length(value: str, start: int) -> int:
    """How far a run of one step (aaa, abc, 987) goes from `start`."""
    if start + 1 >= len(value):
        return 1
    step = ord(value[start + 1]) - ord(value[start])
    if abs(step) > 1:
        return 1
    end = start + 1
    while end + 1 < len(value) and ord(value[end + 1]) - ord(value[end]) == step:
        end += 1
    return end - start + 1


@lru_cache(maxsize=32)
def estimated_bits(value: str) -> float:
    """Bits a guesser must cover to find `value` (an estimate, low for human patterns)."""
    if not value:
        return 0.0
    period = _period(value)
    copies = math.log2(len(value) / period) if period < len(value) else 0.0
    priced, rest = value[:period][:_PRICED_LENGTH], value[:period][_PRICED_LENGTH:]
    char_bits = _alphabet_bits(value)
    lowered = priced.lower()
    # best[i]: the cheapest way to write priced[:i]
    best = [0.0] + [math.inf] * len(priced)
    for start in range(len(priced)):
        here = best[start]
        best[start + 1] = min(best[start + 1], here + char_bits)
        run = _run_length(priced, start)
        for length in range(3, run + 1):
            best[start + length] = min(best[start + length], here + char_bits + math.log2(length) + 1)
        for length in range(2, min(_LONGEST_WORD, len(priced) - start) + 1):
            if lowered[start:start + length] in _WORDS:
                case_bits = 0.0 if priced[start:start + length].islower() else 1.0
                best[start + length] = min(best[start + length], here + _WORD_BITS + case_bits)
    return best[len(priced)] + len(rest) * char_bits + copies


def secret_weakness(value: str) -> str | None:
    """Why `value` is too guessable to key pseudonyms, or None."""
    bits = estimated_bits(value)
    if bits < MIN_SECRET_BITS:
        return (f"is guessable (about {bits:.0f} bits: repeats, runs or common words; "
                f"at least {MIN_SECRET_BITS:.0f} are needed)")
    return None


# Where pseudonyms keyed by the secret are stored: any row in one means the key is in use.
_KEYED_TABLES = ("request_subjects", "subject_records", "tombstones")
ROTATION_PATH = (
    "the key cannot be changed in place (subject keys are one-way); move to a strong key with a new "
    "database: see docs/security.md, 'Replacing a guessable secret key'"
)


def _in_use(database_url: str) -> bool:
    """Whether the database holds any pseudonym; False when it cannot be read (a server that
    cannot reach its database does not start anyway)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import READ_ONLY, build_engine

    engine = build_engine(database_url)
    try:
        with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            present = set(inspect(connection).get_table_names())
            return any(
                connection.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None
                for table in _KEYED_TABLES if table in present
            )
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def check_at_start(settings) -> None:
    """Refuse to start with a guessable secret, outside the embedded default (whose key is
    generated). A key that already keys stored pseudonyms is kept, with a warning: refusing it
    would strand every request and dataset keyed by it."""
    settings.resolved_secret_key()
    weakness = None if settings.embedded else secret_weakness(settings.secret_key)
    if weakness is None:
        return
    if _in_use(settings.database_url):
        log.warning("OBLIVIATE_SECRET_KEY %s. It already keys stored pseudonyms, so it is kept; %s.", weakness, ROTATION_PATH)
        return
    from app.config import GENERATE_SECRET

    raise RuntimeError(
        f"OBLIVIATE_SECRET_KEY {weakness}; the database holds no pseudonym keyed by it, so choose a random one now. "
        f"Generate one with: {GENERATE_SECRET}"
    )
