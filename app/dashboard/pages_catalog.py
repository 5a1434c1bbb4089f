"""Models, datasets and the subject lookup."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from app.dashboard import charts
from app.dashboard.web import DashboardRoute, PosterDep, ViewerDep, render, require
from app.datasets import service as dataset_service
from app.deps import SessionDep
from app.identities.service import UnknownKind
from app.jobs.models import Job
from app.lineage import service as lineage_service
from app.models import rehearsal_results as rehearsal_service
from app.models import service as model_service
from app.schemas import Subject

router = APIRouter(include_in_schema=False, route_class=DashboardRoute)
RECENT_JOBS = 20


@router.get("/models", response_class=HTMLResponse)
def model_list(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "models:read")
    return render(request, "models.html", viewer, models=model_service.list_for(session, viewer.principal))


def _shard_map(versions) -> list[dict]:
    """Per version, each shard's weights and whether they changed from the version before: a
    SISA erasure retrains one shard, and this is where that shows."""
    rows, previous = [], None
    for version in versions:
        shards = []
        for index, shard in enumerate(version.shards or []):
            before = previous.shards[index]["weights"] if previous and index < len(previous.shards) else None
            shards.append({"index": index, "weights": shard.get("weights", ""), "slices": len(shard.get("checkpoints") or []),
                           "changed": before is not None and before != shard.get("weights")})
        rows.append({"version": version.version, "shards": shards})
        previous = version
    return rows


@router.get("/models/{name}", response_class=HTMLResponse)
def model_detail(request: Request, name: str, viewer: ViewerDep, session: SessionDep, client: str | None = None) -> Response:
    require(viewer, "models:read")
    model = model_service.get_for(session, viewer.principal, name, client=client)
    versions = model_service.versions(session, model)
    rehearsal = rehearsal_service.latest(session, model.id)
    return render(request, "model.html", viewer, model=model, versions=versions,
                  series=charts.metric_series([(v.version, v.metrics or {}) for v in versions]),
                  shard_map=_shard_map(versions) if model.sisa else [], jobs=_jobs(session, model.id),
                  rehearsal=rehearsal, rehearsal_draws=rehearsal_service.draws_of(rehearsal) if rehearsal else 0)


@router.get("/models/{name}/jobs", response_class=HTMLResponse)
def model_jobs(request: Request, name: str, viewer: ViewerDep, session: SessionDep, client: str | None = None) -> Response:
    """The jobs fragment the model page polls while one is queued or running."""
    require(viewer, "models:read")
    model = model_service.get_for(session, viewer.principal, name, client=client)
    return render(request, "_model_jobs.html", viewer, model=model, jobs=_jobs(session, model.id))


def _jobs(session, model_id) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.model_id == model_id).order_by(Job.created_at.desc()).limit(RECENT_JOBS)))


@router.get("/datasets", response_class=HTMLResponse)
def dataset_list(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "models:read")
    cursor = (request.query_params.get("cursor") or "")[:200] or None
    datasets, next_cursor = dataset_service.list_datasets(session, viewer.principal, limit=50, cursor=cursor)
    return render(request, "datasets.html", viewer, datasets=datasets, next_cursor=next_cursor)


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_detail(request: Request, dataset_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    require(viewer, "models:read")
    dataset = dataset_service.get_dataset_for(session, viewer.principal, dataset_id)
    return render(request, "dataset.html", viewer, dataset=dataset, versions=dataset_service.versions_of(session, dataset))


@router.get("/subjects", response_class=HTMLResponse)
def subject_form(request: Request, viewer: ViewerDep) -> Response:
    require(viewer, "requests:review")
    return render(request, "subjects.html", viewer, result=None, error=None)


@router.post("/subjects", response_class=HTMLResponse)
def subject_lookup(
    request: Request, viewer: PosterDep, session: SessionDep,
    kind: Annotated[str, Form(max_length=64)] = "", identifier: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    """Where a subject's records are. A POST, so the identifier never enters a URL, an access log
    or the history; the answer names the subject only by its key digest, and the form comes back empty."""
    require(viewer, "requests:review")
    try:
        identifiers = Subject(identifiers={kind.strip(): identifier}).identifiers
    except ValidationError:
        return render(request, "subjects.html", viewer, status_code=422, result=None,
                      error="The kind must be a lower-case word and the identifier valid for that kind.")
    try:
        result = lineage_service.lookup(session, viewer.principal, identifiers)
    except UnknownKind as exc:  # its detail lists the known kinds, never the identifier
        return render(request, "subjects.html", viewer, status_code=422, result=None, error=exc.detail)
    return render(request, "subjects.html", viewer, result=result, error=None, kind=kind.strip())
