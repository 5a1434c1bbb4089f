"""Shared steps of the dashboard tests: keys, sign-in, CSRF tokens, requests."""

from __future__ import annotations

import re
import uuid

from app.db import session_scope
from app.keys import service as key_service

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def new_key(scopes: str = "requests:write,requests:read,requests:review", client: str = "acme") -> str:
    with session_scope() as session:
        _key, plaintext = key_service.create_key(session, f"{client}-{uuid.uuid4().hex[:6]}", scopes.split(","), client=client)
    return plaintext


def post_login(client, plaintext: str, **kwargs):
    """Post the sign-in form as a browser does: with the CSRF token of a freshly loaded form."""
    token = csrf_of(client, "/admin/login")
    return client.post("/admin/login", data={"api_key": plaintext, "csrf_token": token}, **kwargs)


def sign_in(client, plaintext: str) -> None:
    response = post_login(client, plaintext, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin"


def csrf_of(client, path: str = "/admin") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def new_request(client, plaintext: str, external_id: str | None = None, email: str | None = None,
                jurisdiction: str = "gdpr", source: str = "portal", verification: dict | None = None) -> str:
    body = {"subject": {"identifiers": {"email": email or f"{uuid.uuid4().hex[:10]}@example.org"}},
            "jurisdiction": jurisdiction, "source": source}
    if external_id:
        body["external_id"] = external_id
    if verification:
        body["identity_verification"] = verification
    response = client.post("/v1/erasure-requests", json=body, headers={"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def complete_without_data(request_id: str) -> None:
    """Approve and plan a request whose subject is in no dataset (of a client that holds e-mail
    addresses): the planner completes it and signs its certificate, as the worker's beat would."""
    from app.identities import service as identity_service
    from app.keys.service import Principal
    from app.requests import service as request_service
    from app.unlearning import planner

    with session_scope() as session:
        admin = Principal("00000000-0000-0000-0000-000000000000", "acme", "test", frozenset({"admin"}))
        request = request_service.review(session, admin, uuid.UUID(request_id), "approve", None,
                                         override_reason="Identity confirmed by the privacy team.")
        identity_service.hold_kinds(session, request.client, ["email"])
        planner.plan_request(session, request)


FIGURES = {
    "before": {"forget": {"accuracy": 0.97, "loss": 0.11, "n": 12}, "retain": {"accuracy": 0.95, "loss": 0.16, "n": 900},
               "holdout": {"accuracy": 0.91, "loss": 0.27, "n": 200}, "mia_auc": 0.71},
    "after": {"forget": {"accuracy": 0.90, "loss": 0.29, "n": 12}, "retain": {"accuracy": 0.95, "loss": 0.16, "n": 900},
              "holdout": {"accuracy": 0.91, "loss": 0.27, "n": 200}, "mia_auc": 0.52},
    "lineage_proof": {"forget_records": 12, "in_new_manifest": 0}, "holdout_available": True,
    # As the job records it for an exact method: verdicts kept, never escalated on.
    "verdicts": {
        "verdict": "inconclusive", "alpha": 0.05, "records": 12, "reference": "shards", "epsilon_lower_bound": 0.0,
        "escalates": False, "method": "sisa", "exact": True,
        "reasons": ["inconclusive: forget − holdout accuracy −0.010, 90% interval [−0.210, +0.190] on 12 records"],
        "notes": ["inconclusive: holdout accuracy drop +0.000, 90% interval [−0.020, +0.035] on 200 records"],
        "checks": [
            {"name": "forget_accuracy_gap", "attack": None, "estimate": -0.01, "interval": [-0.21, 0.19],
             "tolerance": 0.15, "two_sided": True, "verdict": "inconclusive", "reason": "too little evidence",
             "confidence": 0.9, "utility": False},
            {"name": "holdout_drop", "attack": None, "estimate": 0.0, "interval": [-0.02, 0.035], "tolerance": 0.03,
             "two_sided": False, "verdict": "inconclusive", "reason": "too little evidence", "confidence": 0.9,
             "utility": True},
        ],
    },
}


def seed_unlearned(request_id: str, client: str = "acme", figures: dict | None = None) -> str:
    """A SISA model whose erasure job for `request_id` finished, written as the worker would
    leave the rows (no training: the pages only read them), then the request completed with
    its certificate by the completion service. Returns the model's name. `figures`: the
    verification block the job recorded (FIGURES unless given)."""
    from app.datasets.models import Dataset, DatasetVersion
    from app.db import utcnow
    from app.jobs.models import Job
    from app.models.models import Model, ModelVersion
    from app.requests import service as request_service
    from app.requests.models import ErasureRequest
    from app.unlearning import completion
    from app.jobs.models import JobRequest

    now = utcnow()
    figures = FIGURES if figures is None else figures
    with session_scope() as session:
        dataset = Dataset(client=client, name="churn-events", subject_kind="email", label_column="churned",
                          feature_columns=["f0", "f1"], classes=[0, 1], current_version=2, created_at=now)
        session.add(dataset)
        session.flush()
        versions = [DatasetVersion(dataset_id=dataset.id, version=n, sha256=f"{n}" * 64, rows=rows, subjects=subjects,
                                   origin=origin, created_at=now, destroyed_at=now if n == 1 else None)
                    for n, rows, subjects, origin in ((1, 12_000, 3_000, {"kind": "upload"}),
                                                      (2, 11_988, 2_999, {"kind": "erasure", "rows_removed": 12}))]
        session.add_all(versions)
        model = Model(client=client, name="churn-sisa", family="mlp_classifier", dataset_id=dataset.id, params={},
                      sisa={"shards": 4, "slices": 2}, holdout_fraction=0.2, seed=3, current_version=2, created_at=now)
        session.add(model)
        session.flush()
        shards = [[{"weights": f"{n}{s}" * 32, "checkpoints": ["c" * 64, "d" * 64]} for s in range(4)] for n in (1, 2)]
        shards[1] = [shards[0][s] if s != 2 else shards[1][s] for s in range(4)]  # the erasure retrained shard 2
        for n, metrics, origin in ((1, {"holdout": {"accuracy": 0.90, "loss": 0.28}}, {"kind": "training"}),
                                   (2, {"verification": figures}, {"kind": "unlearning", "method": "sisa"})):
            session.add(ModelVersion(
                model_id=model.id, version=n, dataset_version_id=versions[n - 1].id, family="mlp_classifier", params={},
                seed=3, shape={}, sisa=model.sisa, manifest_sha256="e" * 64, shards=shards[n - 1], sha256=f"{n}" * 64,
                metrics=metrics, origin=origin, state={}, created_at=now, destroyed_at=now if n == 1 else None))
        job = Job(id=uuid.uuid4(), client=client, kind="unlearning", status="completed", model_id=model.id, payload={},
                  attempt=1, max_attempts=5, created_at=now, finished_at=now, progress={"fraction": 1.0, "step": "completed"},
                  result={"model": {"model": model.name, "method": "sisa", "verification": figures,
                                    "version_before": 1, "version_after": 2}})
        session.add(job)
        session.flush()
        session.add(JobRequest(job_id=job.id, request_id=uuid.UUID(request_id), added_at=now))
        request = session.get(ErasureRequest, uuid.UUID(request_id))
        request_service.move(session, request, "schedule", "test")
        session.flush()
        completion.complete_finished(session, job)
    return model.name


REHEARSAL_RESULTS = [
    {"method": "neggrad_plus", "settings": {"learning_rate": 0.003}, "verdict": "pass", "reasons": [],
     "gaps": {"forget_accuracy": 0.012, "holdout_accuracy": 0.004, "mia_auc": 0.01}, "cost": 0.31, "cpu_s": 0.6,
     "pass_rate": 2 / 3, "passed": True, "draws": [
         {"verdict": "pass", "passed": True, "gaps": {"forget_accuracy": 0.01, "holdout_accuracy": 0.004, "mia_auc": -0.01}},
         {"verdict": "pass", "passed": True, "gaps": {"forget_accuracy": -0.02, "holdout_accuracy": 0.0, "mia_auc": 0.01}},
         {"verdict": "inconclusive", "passed": False,
          "gaps": {"forget_accuracy": 0.006, "holdout_accuracy": -0.008, "mia_auc": 0.01}}]},
    {"method": "finetune", "settings": {}, "verdict": "fail", "reasons": ["fail: forget records still recognisable"],
     "gaps": {"forget_accuracy": 0.4, "holdout_accuracy": None, "mia_auc": 0.2}, "cost": 0.1, "cpu_s": 0.05,
     "passed": False},
    # Failed its first two draws, so the third was not run (workers/engine/unlearning/rehearsal.py `decided`).
    {"method": "scrub", "settings": {}, "verdict": "fail", "reasons": ["fail: forget accuracy not within the margin"],
     "gaps": {"forget_accuracy": 0.2, "holdout_accuracy": 0.01, "mia_auc": 0.1}, "cost": 0.3, "cpu_s": 0.2,
     "pass_rate": 0.0, "passed": False, "draws": [
         {"verdict": "fail", "passed": False, "gaps": {"forget_accuracy": 0.2, "holdout_accuracy": 0.01, "mia_auc": 0.1}},
         {"verdict": "fail", "passed": False, "gaps": {"forget_accuracy": 0.2, "holdout_accuracy": 0.01, "mia_auc": 0.1}},
         {"verdict": "skipped", "passed": False,
          "gaps": {"forget_accuracy": None, "holdout_accuracy": None, "mia_auc": None}}]},
    # Not run on a draw whose no-op control passed the original (`UNTESTABLE`), failed the next,
    # and then could no longer pass.
    {"method": "salun", "settings": {"mask_fraction": 0.5}, "verdict": "fail",
     "reasons": ["the checks cannot see the subjects of 1 of 3 draws", "fail: forget accuracy not within the margin"],
     "gaps": {"forget_accuracy": 0.09, "holdout_accuracy": 0.0, "mia_auc": 0.02}, "cost": 0.4, "cpu_s": 0.1,
     "pass_rate": 0.0, "passed": False, "draws": [
         {"verdict": "untestable", "passed": False,
          "gaps": {"forget_accuracy": None, "holdout_accuracy": None, "mia_auc": None}},
         {"verdict": "fail", "passed": False, "gaps": {"forget_accuracy": 0.09, "holdout_accuracy": 0.0, "mia_auc": 0.02}},
         {"verdict": "skipped", "passed": False,
          "gaps": {"forget_accuracy": None, "holdout_accuracy": None, "mia_auc": None}}]},
]
# A rehearsal where too few draws were testable for any candidate to pass: nothing ran.
NOTHING_RUN = [
    {"method": "finetune", "settings": {}, "verdict": "inconclusive",
     "reasons": ["the checks cannot see the subjects of 2 of 3 draws; 2 must be passed, so none was run"],
     "gaps": {"forget_accuracy": None, "holdout_accuracy": None, "mia_auc": None}, "cost": None, "cpu_s": 0.0,
     "pass_rate": 0.0, "passed": False, "draws": [
         {"verdict": verdict, "passed": False, "gaps": {"forget_accuracy": None, "holdout_accuracy": None,
                                                        "mia_auc": None}}
         for verdict in ("untestable", "skipped", "untestable")]},
]


def seed_rehearsal(model_name: str, client: str = "acme", results: list | None = None) -> None:
    """A rehearsal row of the model's current version, as workers/rehearsal.py records one."""
    from app.datasets.models import DatasetVersion
    from app.db import utcnow
    from app.models.models import Model, ModelRehearsal

    with session_scope() as session:
        model = session.query(Model).filter_by(client=client, name=model_name).one()
        version = session.query(DatasetVersion).filter_by(dataset_id=model.dataset_id).order_by(
            DatasetVersion.version.desc()).first()
        session.add(ModelRehearsal(id=uuid.uuid4(), model_id=model.id, model_version=model.current_version,
                                   dataset_version_id=version.id, created_at=utcnow(), subjects=25, forget_records=103,
                                   retrain_cpu_s=1.5 if results is None else 0.0,
                                   results=REHEARSAL_RESULTS if results is None else results,
                                   chosen={"method": "neggrad_plus", "settings": {"learning_rate": 0.003}}
                                   if results is None else None))
