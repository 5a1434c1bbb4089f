"""Verifying the audit trail as a whole: every request's chain, the log over all events against
its checkpoints, and every certificate against its signature and the chain it names. It sits
above the audit and certificates packages, which it both reads.

The chains (app/audit/service.py) show that each request's events link up; this shows that the
log is the one that was checkpointed: the first N events in log order still hash to the root that
checkpoint N signed. A checkpoint kept outside the database (the published copy, an auditor's
file) therefore reveals an event rewritten, deleted or inserted below N, even by someone who
dropped the triggers, recomputed every hash and deleted every checkpoint row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from app.audit import checkpoints, service
from app.audit.merkle import Frontier
from app.audit.models import AuditCheckpoint, AuditEvent
from app.audit.notes import NoteError
from app.certificates import signing
from app.certificates import remediation
from app.certificates.models import Certificate, RemediationCertificate
from app.certificates.service import signed_document
from app.integrity.schemas import BrokenChain, LogSummary, VerifyReport


@dataclass
class LogReport:
    tree_size: int = 0
    unsequenced: int = 0
    checkpoints: int = 0
    latest_checkpoint: int | None = None
    certificates: int = 0
    unanchored_certificates: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def verify_log(session: Session, held: Iterable[tuple[str, str]] = (), batch_size: int = 5000) -> LogReport:
    """`held`: (label, note) checkpoints from outside the database, checked like stored ones."""
    report = LogReport()
    key, this_origin = checkpoints.public_key(), checkpoints.origin()
    targets: dict[int, list[tuple[str, str]]] = {}

    def expect(label: str, note: str, stored_size: int | None = None) -> None:
        try:
            checkpoint = checkpoints.verify_note(note, key)
        except NoteError as exc:
            report.problems.append(f"{label}: {exc}")
            return
        if checkpoint.origin != this_origin:
            report.problems.append(f"{label}: origin '{checkpoint.origin}' is not this log's ('{this_origin}')")
            return
        if stored_size is not None and checkpoint.tree_size != stored_size:
            report.problems.append(f"{label}: its note signs tree size {checkpoint.tree_size}")
        report.checkpoints += 1
        report.latest_checkpoint = max(report.latest_checkpoint or 0, checkpoint.tree_size)
        targets.setdefault(checkpoint.tree_size, []).append((label, checkpoint.root_hex))

    stored = 0
    for row in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)):
        expect(f"checkpoint {row.tree_size}", row.note, row.tree_size)
        stored = row.tree_size
    for label, note in held:
        expect(label, note)

    frontier = Frontier()
    rows = session.execute(
        select(AuditEvent.log_index, AuditEvent.hash).where(AuditEvent.log_index.is_not(None))
        .order_by(AuditEvent.log_index).execution_options(yield_per=batch_size)
    )
    for index, event_hash in rows:
        if index != frontier.size:
            report.problems.append(f"log position {frontier.size} is missing (the next event is at {index})")
            break
        frontier.append(event_hash)
        for label, root in targets.get(frontier.size, ()):
            if frontier.root().hex() != root:
                report.problems.append(
                    f"{label}: the first {frontier.size} events of the log no longer hash to its root "
                    "(an event below it was changed, removed or inserted)"
                )
    rows.close()
    report.tree_size = frontier.size
    for size in sorted(s for s in targets if s > frontier.size):
        for label, _root in targets[size]:
            report.problems.append(f"{label} covers {size} events but the log holds {frontier.size} in order")
    if frontier.size > stored:
        # Positions and their checkpoint commit together: positions past the last checkpoint mean
        # checkpoint rows were removed.
        report.problems.append(f"events up to log position {frontier.size - 1} are sequenced, but the "
                               f"stored checkpoints cover only {stored}")
    report.unsequenced = session.scalar(select(func.count()).where(AuditEvent.log_index.is_(None))) or 0
    _check_certificates(session, report)
    return report


def _check_certificates(session: Session, report: LogReport, chunk: int = 500) -> None:
    """Each certificate: its signature, the chain link it records, and the `certificate.issued`
    event carrying its digest; counted unanchored while that event awaits a checkpoint."""
    issued = {
        (stream, (data or {}).get("sha256")): log_index
        for stream, data, log_index in session.execute(
            select(AuditEvent.stream, AuditEvent.data, AuditEvent.log_index).where(AuditEvent.type == "certificate.issued")
        )
    }
    anchored_below = report.latest_checkpoint or 0
    # Certificates of erasure, then of remediation (docs/remediation.md): signed and chained alike.
    certificates = [(f"certificate of request {c.request_id}", c.body, signed_document(c))
                    for c in session.scalars(select(Certificate).order_by(Certificate.request_id))]
    certificates += [(f"certificate of remediation {c.remediation_id}", c.body, remediation.signed_document(c))
                     for c in session.scalars(select(RemediationCertificate).order_by(RemediationCertificate.remediation_id))]
    report.certificates = len(certificates)
    for start in range(0, len(certificates), chunk):
        part = certificates[start:start + chunk]
        links = {(body.get("audit_chain") or {}).get("stream"): body for _label, body, _document in part}
        wanted = [(stream, (body["audit_chain"]).get("seq")) for stream, body in links.items() if stream]
        found = dict(((s, q), h) for s, q, h in session.execute(
            select(AuditEvent.stream, AuditEvent.seq, AuditEvent.hash).where(tuple_(AuditEvent.stream, AuditEvent.seq).in_(wanted))
        )) if wanted else {}
        for label, body, document in part:
            ok, reason = signing.verify_document(document)
            if not ok:
                report.problems.append(f"{label}: {reason}")
                continue
            chain = body.get("audit_chain") or {}
            if found.get((chain.get("stream"), chain.get("seq"))) != chain.get("head"):
                report.problems.append(f"{label}: its chain no longer has the link it records (seq {chain.get('seq')})")
            digest = hashlib.sha256(signing.document_bytes(document)).hexdigest()
            if (chain.get("stream"), digest) not in issued:
                report.problems.append(f"{label}: no certificate.issued event carries its digest")
                continue
            log_index = issued[(chain.get("stream"), digest)]
            if log_index is None or log_index >= anchored_below:
                report.unanchored_certificates += 1


def build_report(session: Session, held: list[tuple[str, str]] | None = None) -> VerifyReport:
    """Every chain, and the log against every stored checkpoint, the copy published outside the
    database, any `held` (label, note) and every certificate."""
    chains = events = 0
    broken: list[BrokenChain] = []
    for stream, result in service.verify_all(session):
        chains += 1
        events += result.length
        if not result.valid:
            broken.append(BrokenChain(stream=stream, seq=result.broken_at_seq, problem=result.problem))
    outside = checkpoints.published_latest()
    held = ([("published checkpoint", outside)] if outside else []) + list(held or [])
    anchoring = verify_log(session, held)
    summary = LogSummary(valid=anchoring.valid, **{k: v for k, v in vars(anchoring).items()})
    return VerifyReport(
        valid=not broken and anchoring.valid, chains=chains, events=events, broken=broken[:100],
        first_broken=broken[0] if broken else None, log=summary,
    )
