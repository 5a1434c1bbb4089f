"""Format-3 certificate bodies built from typed inputs, shared by the certificate tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.certificates.sections import Checked, Scope
from app.certificates.service import CertificateInput, ChainLink, ErasureFacts, build_body

KEYS = {"email": "a" * 64}
NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
REQUEST = uuid.UUID("00000000-0000-0000-0000-00000000000a")
MODEL_ID, DATASET_ID = uuid.uuid4(), uuid.uuid4()
DATASET = {"dataset_id": str(DATASET_ID), "name": "users", "version_before": 1, "version_after": 2,
           "sha256_before": "d1", "sha256_after": "d2", "rows_removed": 3, "subjects_removed": 1, "destroyed": []}
VERDICTS = {"verdict": "pass", "alpha": 0.05, "checks": []}


def model_entry(method: str, **extra) -> dict:
    return {"model": "churn", "model_id": str(MODEL_ID), "version_before": 1, "sha256_before": "w1",
            "version_after": 2, "sha256_after": "w2", "method": method, "requested_method": method,
            "escalations": [], "details": extra.pop("details", {}), "destroyed": [],
            "verification": {"verdicts": VERDICTS}, **extra}


def body(models=(), copies=(), client: str = "acme") -> dict:
    facts = ErasureFacts(
        request_id=REQUEST, client=client, jurisdiction="gdpr", source="portal", external_id=None,
        received_at=NOW - timedelta(days=1), due_at=NOW + timedelta(days=29), completed_at=NOW, outcome="erased",
        subject_keys=KEYS, scope=Scope(("email",), (Checked("users", 1, True), Checked("other", 4, False)),
                                       (Checked("churn", 1, True),)),
        datasets=(DATASET,), models=tuple(models),
    )
    return build_body(CertificateInput(facts, ChainLink("request:x", 3, "h"), NOW, tuple(copies)))
