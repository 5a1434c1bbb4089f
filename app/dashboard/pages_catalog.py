"""Models, datasets and the subject lookup."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from app.artifacts.store import get_store
from app.dashboard import charts, queries
from app.dashboard.web import DashboardRoute, PosterDep, ViewerDep, list_page, render, require
from app.datasets import service as dataset_service
from app.db import session_scope
from app.deps import SessionDep
from app.errors import Gone, NotFound, Unprocessable
from app.families.registry import data_kind
from app.identities.service import UnknownKind
from app.jobs.models import Job
from app.lineage import service as lineage_service
from app.models import inference, inference_budget, sample_grid
from app.models import rehearsal_results as rehearsal_service
from app.models import service as model_service
from app.pseudonym import subject_keys
from app.schemas import Subject
from app.unlearning import service as unlearning_service

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
    current = next((v for v in versions if v.version == model.current_version), None)
    rehearsal = rehearsal_service.latest(session, model.id)
    return render(request, "model.html", viewer, model=model, versions=versions, current=current,
                  image_model=data_kind(model.family) == "image",
                  series=charts.metric_series([(v.version, v.metrics or {}) for v in versions]),
                  shard_map=_shard_map(versions) if model.sisa else [], jobs=_jobs(session, model.id),
                  rehearsal=rehearsal, rehearsal_draws=rehearsal_service.draws_of(rehearsal) if rehearsal else 0)


@router.post("/models/{name}/samples", response_class=HTMLResponse)
async def draw_samples(request: Request, name: str, viewer: PosterDep, client: str | None = None) -> Response:
    """Draw a new grid of samples from an image model's current version on the inference worker,
    and keep it with that version (its bytes are destroyed with the version's weights)."""
    require(viewer, "models:read")

    def check(version) -> None:
        if data_kind(version.family) != "image":
            raise Unprocessable("Only image models draw samples.")

    loaded = await inference.load_current(viewer.principal, name, client, check)
    steps = int(loaded["params"]["sample_steps"])
    # As many of the grid's images as one call may draw under OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS.
    count = inference_budget.samples_within(loaded, steps, sample_grid.GRID_IMAGES)
    images = await inference.sample(viewer.principal.client, loaded, count, sample_grid.GRID_SEED, steps, None)
    png = await run_in_threadpool(sample_grid.compose, images)
    await run_in_threadpool(_attach_grid, viewer, name, client, loaded["version"], png)
    suffix = f"?client={quote(client)}" if client else ""
    return RedirectResponse(f"/admin/models/{quote(name)}{suffix}", status_code=303)


def _attach_grid(viewer, name: str, client: str | None, number: int, png: bytes) -> None:
    with session_scope() as session:
        model = model_service.get_for(session, viewer.principal, name, client=client)
        replaced = sample_grid.attach(session, model_service.get_version(session, model, number), png,
                                      unlearning_service.live_references)
        if replaced:
            unlearning_service.schedule_unreferenced(session, [replaced])


@router.get("/models/{name}/versions/{version}/samples.png")
def sample_grid_image(name: str, version: int, viewer: ViewerDep, session: SessionDep, client: str | None = None) -> Response:
    """A version's grid of samples; 410 once the version's weights were destroyed."""
    require(viewer, "models:read")
    model = model_service.get_for(session, viewer.principal, name, client=client)
    row = model_service.get_version(session, model, version)
    if row.destroyed_at is not None:
        raise Gone("This version's weights and samples were destroyed because they held an erased data subject.")
    if not row.sample_grid_sha256:
        raise NotFound("No samples were drawn from this version.")
    return Response(get_store().get_bytes(row.sample_grid_sha256), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


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
    return list_page(request, viewer, "models:read", "datasets.html", "datasets",
                     lambda limit, cursor: dataset_service.list_datasets(session, viewer.principal, limit=limit,
                                                                         cursor=cursor))


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
    erasures = queries.erasures_of(session, viewer.principal, subject_keys(identifiers).values())
    return render(request, "subjects.html", viewer, result=result, error=None, kind=kind.strip(), erasures=erasures)
