"""Identity resolution (docs/identity-resolution.md): which subject keys one person's
identifiers stand for, per client. Flushes only; the caller's unit of work commits.

Nodes are subject keys (app/pseudonym.py: the HMAC of kind and normalised value, the kind part
of the input), so keys of different kinds never collide and no kind is ever renamed. Links come
from datasets' identifier columns and from clients' declarations; a request resolves to the
closure of its keys over them, bounded at MAX_CLOSURE keys."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.db import insert_skipping_taken, utcnow
from app.errors import Unprocessable
from app.identities.models import HeldKind, IdentityLink, RequestSearch
from app.keys.service import Principal
from app.pseudonym import subject_key

# Kinds every client may name, held or not: what people name themselves by.
BUILTIN_KINDS = ("email", "phone")
MAX_CLOSURE = 32
IN_CHUNK = 500
# A (kind, subject key) pair: how the lineage index matches a dataset's subjects.
Pair = tuple[str, str]


class UnknownKind(Unprocessable):
    title, slug = "Unknown identifier kind", "unknown-identifier-kind"


def known_kinds(session: Session, client: str) -> list[str]:
    """The kinds a client may name: the built-in ones and every kind its datasets or links hold."""
    return sorted(set(BUILTIN_KINDS) | held_kinds(session, client))


def held_kinds(session: Session, client: str) -> set[str]:
    return set(session.scalars(select(HeldKind.kind).where(HeldKind.client == client)))


def check_known(session: Session, client: str, kinds: Iterable[str]) -> None:
    """422 listing the known kinds when any kind is not one: a misspelt kind ("userid") would
    otherwise find nobody and complete as if the person were not there."""
    given = set(kinds)
    if not only_builtin(given):
        refuse_unknown(given, known_kinds(session, client))


def only_builtin(kinds: Iterable[str]) -> bool:
    """Whether every kind is one all clients know (no look-up of the client's kinds needed)."""
    return set(kinds) <= set(BUILTIN_KINDS)


# A client's held kinds only grow (an upload or a link adds them; nothing removes them), so a kind
# this process once read as known stays known: intake reads the table only for a kind it has not
# seen known yet, and a request by a held kind costs no database read.
_seen_known: dict[str, frozenset[str]] = {}
_seen_lock = threading.Lock()


def seen_known(client: str, kinds: Iterable[str]) -> bool:
    """Whether every kind is built in or was already read as known for this client."""
    given = set(kinds)
    return only_builtin(given) or given <= _seen_known.get(client, frozenset())


def remember_known(client: str, known: Iterable[str]) -> None:
    with _seen_lock:
        _seen_known[client] = _seen_known.get(client, frozenset()) | frozenset(known)


def forget_seen_known() -> None:
    """Empty this process's memory of known kinds: only for a database emptied under it (tests)."""
    with _seen_lock:
        _seen_known.clear()


def unknown_problem(kinds: Iterable[str], known: Iterable[str]) -> UnknownKind | None:
    """The 422 for the kinds that are not among `known`; None when all are."""
    known = sorted(known)
    unknown = sorted(set(kinds) - set(known))
    if not unknown:
        return None
    return UnknownKind(
        f"Unknown identifier kind(s): {', '.join(unknown)}. This client's known kinds are: {', '.join(known)}.",
        unknown_kinds=unknown, known_kinds=known,
    )


def refuse_unknown(kinds: Iterable[str], known: Iterable[str]) -> None:
    problem = unknown_problem(kinds, known)
    if problem is not None:
        raise problem


def hold_kinds(session: Session, client: str, kinds: Iterable[str]) -> None:
    """Record that the client's data holds these kinds (an upload's subject and identifier
    columns, a declared link)."""
    now = utcnow()
    statement = insert_skipping_taken(session.get_bind().dialect.name, HeldKind.__table__, ("client", "kind"), "kind")
    for kind in sorted(set(kinds)):
        session.execute(statement, {"client": client, "kind": kind, "created_at": now})


def _link_rows(client: str, links: Iterable[tuple[Pair, Pair]], origin: str, dataset_id: uuid.UUID | None) -> list[dict[str, Any]]:
    now = utcnow()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for first, second in links:
        if first[1] == second[1]:
            continue
        (kind_a, key_a), (kind_b, key_b) = sorted((first, second), key=lambda pair: pair[1])
        rows[(key_a, key_b)] = {"client": client, "key_a": key_a, "key_b": key_b, "kind_a": kind_a, "kind_b": kind_b,
                                "origin": origin, "dataset_id": dataset_id, "created_at": now}
    return list(rows.values())


def _insert_links(session: Session, rows: list[dict[str, Any]]) -> None:
    statement = insert_skipping_taken(session.get_bind().dialect.name, IdentityLink.__table__, ("client", "key_a", "key_b"), "key_a")
    for start in range(0, len(rows), IN_CHUNK):
        chunk = rows[start:start + IN_CHUNK]
        if chunk:
            list(session.scalars(statement, chunk))


def add_dataset_links(session: Session, client: str, dataset_id: uuid.UUID, links: Iterable[tuple[Pair, Pair]]) -> None:
    """Links from an upload's identifier columns: each identifier pseudonym to its row's subject."""
    _insert_links(session, _link_rows(client, links, "dataset", dataset_id))


def declare_links(session: Session, principal: Principal, identifiers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Link identifiers (kind, raw value) that a client says denote one person: hashed here,
    stored as pseudonyms, audited by kinds and digest. Answers what the audit event holds.

    A link declares its kinds, so it may bring new ones; but at least one of its identifiers must
    be of a known kind (else 422 listing them), so that a link made only of misspelt kinds links
    nothing anyone can ask for."""
    kinds = {kind for kind, _value in identifiers}
    known = known_kinds(session, principal.client)
    if not kinds & set(known):
        refuse_unknown(kinds, known)
    pairs = sorted({(kind, subject_key(kind, value)) for kind, value in identifiers})
    if len({key for _kind, key in pairs}) < 2:
        raise Unprocessable("A link needs at least two different identifiers.")
    _insert_links(session, _link_rows(principal.client, ((pairs[0], pair) for pair in pairs[1:]), "declared", None))
    hold_kinds(session, principal.client, (kind for kind, _key in pairs))
    record = {"kinds": sorted({kind for kind, _key in pairs}), "identifiers": len(pairs), "links_digest": _digest(pairs)}
    audit_service.append(session, f"identities:{principal.client}", "identity.linked", principal.actor, record)
    session.flush()
    return record


def _digest(pairs: Sequence[Pair]) -> str:
    return hashlib.sha256("\n".join(f"{kind}:{key}" for kind, key in pairs).encode()).hexdigest()


@dataclass(frozen=True)
class Resolution:
    """A request's identifiers resolved: every (kind, subject key) they denote, and why the
    request cannot be planned as it is (None when it can)."""

    kinds: tuple[str, ...]
    pairs: tuple[Pair, ...]
    problem: str | None


def resolve(session: Session, client: str, pairs: Iterable[Pair]) -> Resolution:
    """The closure of the request's keys over the client's links: "identity_closure_too_large"
    past MAX_CLOSURE keys, "unresolvable_identifier_kind" when no kind of the request is held."""
    given = sorted(set(pairs))
    kinds = tuple(sorted({kind for kind, _key in given}))
    found = dict((key, kind) for kind, key in given)
    frontier = set(found)
    while frontier:
        keys = sorted(frontier)
        frontier = set()
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start:start + IN_CHUNK]
            for link in session.scalars(select(IdentityLink).where(
                    IdentityLink.client == client, or_(IdentityLink.key_a.in_(chunk), IdentityLink.key_b.in_(chunk)))):
                for kind, key in ((link.kind_a, link.key_a), (link.kind_b, link.key_b)):
                    if key not in found:
                        found[key] = kind
                        frontier.add(key)
        if len(found) > MAX_CLOSURE:
            return Resolution(kinds, tuple(given), "identity_closure_too_large")
    resolved = tuple(sorted((kind, key) for key, kind in found.items()))
    unheld = not set(kinds) & held_kinds(session, client)
    return Resolution(kinds, resolved, "unresolvable_identifier_kind" if unheld else None)


def remove_links(session: Session, client: str, keys: Sequence[str]) -> None:
    """Erasing subjects removes every link that touches one of their keys."""
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start:start + IN_CHUNK]
        session.execute(delete(IdentityLink).where(
            IdentityLink.client == client, or_(IdentityLink.key_a.in_(chunk), IdentityLink.key_b.in_(chunk))))


@dataclass(frozen=True)
class Checked:
    """One dataset or model a request's search looked in, and whether it held the person."""

    type: str
    id: str
    name: str
    version: int
    held: bool


@dataclass(frozen=True)
class Searched:
    """What planning a request searched (stored; the certificate can carry it)."""

    kinds: tuple[str, ...]
    subjects: int
    checked: tuple[Checked, ...]
    at: datetime
    # Every kind searched: the request's and those its identifiers are linked to.
    resolved_kinds: tuple[str, ...] = ()


def record_search(session: Session, request_id: uuid.UUID, resolution: Resolution, checked: Iterable[Checked]) -> None:
    """Store (or, on a second planning, replace) what the request's planning searched."""
    row = session.get(RequestSearch, request_id) or RequestSearch(request_id=request_id)
    row.kinds = list(resolution.kinds)
    row.pairs = [list(pair) for pair in resolution.pairs]
    row.checked = [vars(item) for item in sorted(checked, key=lambda c: (c.type, c.name, c.version))]
    row.searched_at = utcnow()
    session.add(row)
    session.flush()


def searched_for(session: Session, request_id: uuid.UUID) -> Searched | None:
    """What the request's planning searched; None before it was planned."""
    row = session.get(RequestSearch, request_id)
    if row is None:
        return None
    return Searched(kinds=tuple(row.kinds), subjects=len(row.pairs), checked=tuple(Checked(**item) for item in row.checked),
                    at=row.searched_at, resolved_kinds=tuple(sorted({kind for kind, _key in row.pairs} | set(row.kinds))))


def resolved_pairs(session: Session, request_id: uuid.UUID) -> list[Pair]:
    """The (kind, subject key) pairs planning resolved the request to; empty before planning."""
    row = session.get(RequestSearch, request_id)
    return [] if row is None else [(kind, key) for kind, key in row.pairs]
