"""Re-applying, to a database restored from a backup, the erasures it no longer holds
(docs/operations.md, "Backup and restore").

The erasure log (app/audit/erasure_log.py) lives outside the database and names every erasure
request that completed. For each entry this compares the restored database with it: is the
request there, completed; does any live dataset version still hold its subjects, or a live
model trained on one; are its tombstones there. What the database lost is re-applied through
the ordinary paths, never a second eraser: the tombstones are added back, and a new approved
request for the same subject keys is planned like any other, so the workers erase the data,
unlearn or retrain the models and destroy the old versions and their references.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.audit import checkpoints
from app.audit.erasure_log import ErasureEntry
from app.datasets import service as dataset_service
from app.requests import reapply
from app.requests.models import ErasureRequest
from app.unlearning import planner

ACTOR = "service:restore-check"


@dataclass
class Finding:
    """What the restored database holds of one logged erasure, and what was done about it."""

    entry: ErasureEntry
    status_in_database: str | None  # of the original request; None: the database lacks it
    datasets: int = 0  # datasets with a live version that still holds a subject
    models: int = 0  # models with a live version trained on one
    tombstones_missing: int = 0
    reapplied_as: uuid.UUID | None = None
    reapplied_status: str | None = None
    created: bool = False  # re-applied by this check
    jobs: int = 0
    problem: str | None = None

    @property
    def action(self) -> str:
        if self.problem:
            return "not re-applied"
        if self.created:
            return f"re-applied now: {self.jobs} job(s) queued" if self.jobs else "re-applied now: nothing held"
        if self.reapplied_as is not None:
            return f"re-applied earlier ({self.reapplied_status})"
        return "in place"


def examine(session: Session, entry: ErasureEntry) -> tuple[Finding, ErasureRequest | None]:
    """The finding for `entry`, and its earlier re-application if a restore-check made one."""
    original = session.get(ErasureRequest, entry.request_id)
    finding = Finding(entry, original.status if original is not None and original.client == entry.client else None)
    dataset_ids, model_ids = planner.holdings(session, entry.client, list(entry.subjects))
    finding.datasets, finding.models = len(dataset_ids), len(model_ids)
    keys = [key for _kind, key in entry.subjects]
    finding.tombstones_missing = len(set(keys) - dataset_service.tombstoned_keys(session, entry.client, keys))
    earlier = reapply.find(session, entry.client, entry.request_id)
    if earlier is not None:
        finding.reapplied_as, finding.reapplied_status = earlier.id, earlier.status
    return finding, earlier


def needs_reapplying(finding: Finding) -> bool:
    """Whether the database lost this erasure. A request completed with nothing found never had
    tombstones, so only a missing or unfinished request counts the tombstones."""
    if finding.datasets or finding.models:
        return True
    if finding.status_in_database == "completed":
        return False
    return finding.reapplied_as is None or finding.tombstones_missing > 0


def check(session: Session, entry: ErasureEntry) -> Finding:
    """Compare the database with `entry` and re-apply the erasure where it was lost. Flushes
    only: the caller commits, one entry per transaction."""
    finding, earlier = examine(session, entry)
    if not needs_reapplying(finding):
        return finding
    if earlier is not None and earlier.status in ("failed", "denied", "cancelled"):
        finding.problem = f"its re-application {earlier.id} ended {earlier.status}"
        return finding
    if earlier is not None and earlier.status != "completed":
        return finding  # queued earlier; the workers are on it
    if earlier is not None:
        # Re-applied and completed, yet the subjects are back: a second restore. The earlier
        # request keeps its external id, so this one is told apart by nothing but its own id.
        finding.problem = f"re-applied as {earlier.id} once already, and the subjects are held again"
        return finding
    request = reapply.create_approved(session, entry.client, entry.jurisdiction, entry.subjects, entry.request_id, ACTOR)
    keys = [key for _kind, key in entry.subjects]
    dataset_service.add_tombstones(session, entry.client, keys, request.id)
    finding.jobs = len(planner.plan_request(session, request))
    finding.reapplied_as, finding.reapplied_status, finding.created = request.id, request.status, True
    return finding


@dataclass(frozen=True)
class LogPosition:
    """The database's audit log against the newest checkpoint published outside it: a database
    restored from a backup ends before checkpoints signed after the backup."""

    database_size: int
    published_size: int | None

    @property
    def behind(self) -> bool:
        return self.published_size is not None and self.published_size > self.database_size


def log_position(session: Session) -> LogPosition:
    latest = checkpoints.latest(session)
    published = checkpoints.published_latest()
    published_size = None
    if published is not None:
        try:
            published_size = checkpoints.verify_note(published).tree_size
        except ValueError:
            published_size = None
    return LogPosition(latest.tree_size if latest else 0, published_size)
