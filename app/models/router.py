from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from app.artifacts.store import get_store
from app.audit import downloads
from app.config import get_settings
from app.db import get_sessionmaker
from app.deps import SessionDep, run_unit_of_work, scoped
from app.errors import Gone, PayloadTooLarge, Unprocessable, sanitised_validation_errors
from app.families.registry import UnknownFamilyError, get_family
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.jobs.schemas import JobOut
from app.models import importer, inference, rehearsal_results, service
from app.models.schemas import (
    NAME_PATTERN,
    ImportMetadata,
    ModelCreate,
    ModelOut,
    ModelPage,
    GenerateBody,
    GenerateOut,
    PredictBody,
    PredictOut,
    RehearsalOut,
    ScoreBody,
    ScoreOut,
)
from app.openapi import problem_responses
from app.routing import UnitOfWorkRoute, reads_only, writes
from app.schemas import CLIENT_PATTERN

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=UnitOfWorkRoute)
Writer = scoped("models:write")
Reader = scoped("models:read")
# Path parameters as the database can hold them: a name that cannot exist, or a version number past
# a 32-bit integer, is a 422 here instead of an error in the query.
ModelName = Annotated[str, Path(pattern=NAME_PATTERN)]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
# Names are unique per client only: an admin key names the client when several have the name.
ClientName = Annotated[str | None, Query(
    min_length=1, max_length=100, pattern=CLIENT_PATTERN, description="The model's client; admin keys only, needed when several clients use the name",
)]
IMPORT_METADATA_EXAMPLE = json.dumps({
    "name": "digits-lr", "family": "logistic_regression",
    "dataset_version_id": "5f0c8a52-3a52-4c1e-9d3e-2b7f1c0a9e11", "record_ids": [1, 2, 3],
})


@router.post(
    "", status_code=202, response_model=JobOut, operation_id="create_model", summary="Train a model",
    dependencies=[IdempotencyKeyHeader],
    # The dataset is not the caller's (404) or destroyed (410); the name is taken (409); job quota (429).
    responses=problem_responses(404, 409, 410, 429),
)
def create_model(body: ModelCreate, request: Request, session: SessionDep, principal: Writer) -> Any:
    def handler():
        _model, job = service.create(session, principal, body)
        return 202, JobOut.model_validate(job, from_attributes=True).model_dump(mode="json"), {"Location": f"/v1/jobs/{job.id}"}

    return idempotency.run(request, session, principal, "create-model", body.model_dump(mode="json"), handler)


@router.post(
    "/import", status_code=201, response_model=ModelOut, operation_id="import_model",
    summary="Import trained weights", dependencies=[IdempotencyKeyHeader],
    # As for training, and 409 for weights that hold an erased subject; 413 for the weights file.
    responses=problem_responses(404, 409, 410, 413),
)
def import_model(
    request: Request, session: SessionDep, principal: Writer,
    weights: Annotated[UploadFile, File(description="safetensors weights of one network")],
    metadata: Annotated[str, Form(
        description="JSON: name, family, params, dataset_version_id, record_ids, seed",
        examples=[IMPORT_METADATA_EXAMPLE],
    )],
    record_ids: Annotated[UploadFile, File(
        description="The trained records' ids instead of metadata.record_ids: Parquet with an integer record_id "
        "column, or one decimal id per line",
    )] = None,
) -> Any:
    try:
        meta = ImportMetadata.model_validate_json(metadata)
    except ValidationError as exc:
        errors = sanitised_validation_errors(exc.errors(include_input=False, include_url=False))
        raise Unprocessable("The metadata field is not valid.", errors=errors) from None
    data = _read_part(weights, "weights")
    ids_file = _read_part(record_ids, "record_ids") if record_ids is not None else None

    def handler():
        ids = importer.parse_record_ids(ids_file) if ids_file is not None else None
        model = importer.import_model(session, principal, meta, data, record_ids=ids)
        return 201, service.to_out(session, model).model_dump(mode="json"), {"Location": f"/v1/models/{model.name}"}

    # The files count by their digests: a retry must send the same files to be a replay.
    payload = {
        "metadata": meta.model_dump(mode="json"), "weights_sha256": hashlib.sha256(data).hexdigest(),
        "record_ids_sha256": hashlib.sha256(ids_file).hexdigest() if ids_file is not None else None,
    }
    return idempotency.run(request, session, principal, "import-model", payload, handler)


def _read_part(part: UploadFile, name: str) -> bytes:
    limit = get_settings().max_upload_bytes
    data = part.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The {name} file is larger than the upload limit.")
    return data


@router.get("", response_model=ModelPage, operation_id="list_models", summary="List models")
def list_models(session: SessionDep, principal: Reader) -> Any:
    return ModelPage(items=[service.to_out(session, m) for m in service.list_for(session, principal)])


@router.get(
    "/{name}", response_model=ModelOut, operation_id="get_model", summary="Get a model",
    responses=problem_responses(409),  # an admin key did not name the client of a name several use
)
def get_model(name: ModelName, session: SessionDep, principal: Reader, client: ClientName = None) -> Any:
    return service.to_out(session, service.get_for(session, principal, name, client=client))


@router.get(
    "/{name}/rehearsal", response_model=RehearsalOut, operation_id="get_model_rehearsal",
    summary="The model's latest unlearning rehearsal",
    responses=problem_responses(404, 409),  # never rehearsed; an ambiguous name (admin keys)
)
def get_rehearsal(name: ModelName, session: SessionDep, principal: Reader, client: ClientName = None) -> Any:
    """Which approximate methods and settings came close enough to real retrains of random
    erasures on this model, draw after draw, with each candidate's verdict, pass rate, gaps and
    cost; jobs start with the one that passed most draws, the cheapest among equals."""
    model = service.get_for(session, principal, name, client=client)
    return RehearsalOut(**rehearsal_results.to_out(rehearsal_results.latest_of(session, model)))


@router.get(
    "/{name}/versions/{version}/weights", operation_id="download_model_weights",
    summary="Download a model version's weights",
    responses={
        200: {
            "description": "safetensors weights; a tar of one safetensors file per shard (and index.json) for SISA",
            "content": {"application/octet-stream": {}, "application/x-tar": {}},
        },
        **problem_responses(409, 410),
    },
    response_class=Response,
)
@writes
def download_weights(
    name: ModelName, version: VersionNumber, session: SessionDep, principal: Reader, client: ClientName = None,
) -> Response:
    model = service.get_for(session, principal, name, client=client)
    model_version = service.get_version(session, model, version)
    if model_version.destroyed_at is not None:
        raise Gone("These weights were destroyed because they held an erased data subject.")
    downloads.record(session, principal, "model", model.id, version, "weights", model_version.sha256)
    store = get_store()
    headers = {"X-Content-SHA256": model_version.sha256}
    if len(model_version.shards) == 1:
        data = store.get_bytes(model_version.shards[0]["weights"])
        headers["Content-Disposition"] = f'attachment; filename="{name}-v{version}.safetensors"'
        return Response(data, media_type="application/octet-stream", headers=headers)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for shard in model_version.shards:
            data = store.get_bytes(shard["weights"])
            info = tarfile.TarInfo(f"shard-{shard['shard']:03d}.safetensors")
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
        index = json.dumps({"sha256": model_version.sha256, "shards": [s["weights"] for s in model_version.shards]}).encode()
        info = tarfile.TarInfo("index.json")
        info.size, info.mtime = len(index), 0
        archive.addfile(info, io.BytesIO(index))
    headers["Content-Disposition"] = f'attachment; filename="{name}-v{version}.tar"'
    return Response(buffer.getvalue(), media_type="application/x-tar", headers=headers)


@router.post(
    "/{name}/predict", response_model=PredictOut, operation_id="predict", summary="Predict with a model's current version",
    # 409: no trained version yet, or an ambiguous name (admin keys); 422: over
    # OBLIVIATE_MAX_INFERENCE_FLOPS; 429 with Retry-After: this client's calls in flight are at
    # OBLIVIATE_MAX_INFERENCE_CALLS_PER_CLIENT; 503 with Retry-After: no inference worker answered in time.
    responses=problem_responses(409, 429, 503),
)
@reads_only
async def predict(name: ModelName, body: PredictBody, principal: Reader, client: ClientName = None) -> Any:
    limit = get_settings().max_predict_rows
    if len(body.rows) > limit:
        raise PayloadTooLarge(f"At most {limit} rows per call; this one has {len(body.rows)}.")

    def check(version) -> None:
        if _is_language_model(version.family):
            raise Unprocessable("This model is a language model: use its generate and score endpoints.")
        width = version.shape["n_features"]
        bad = next((i for i, row in enumerate(body.rows) if len(row) != width), None)
        if bad is not None:
            raise Unprocessable(f"Row {bad} has {len(body.rows[bad])} values; the model expects {width}.")

    loaded = await _load_current(principal, name, client, check)
    probabilities = await inference.predict(principal.client, loaded, body.rows)
    # Finite inputs can still overflow a network (float32 inside): say so instead of sending NaN.
    bad = next((i for i, row in enumerate(probabilities) if not all(p is not None and math.isfinite(p) for p in row)), None)
    if bad is not None:
        raise Unprocessable(f"Row {bad} gives no finite prediction: its values are too large for this model.")
    return PredictOut(model=loaded["model"], version=loaded["version"], probabilities=probabilities)


async def _load_current(principal, name: str, client: str | None, check) -> dict[str, Any]:
    """What a worker needs to answer with the model's current version, after `check(version)`.

    Read, and the session closed, in one threadpool call before the wait (no SessionDep: that
    would close it in a later call): no transaction or lock is held while a worker computes."""
    session = get_sessionmaker()()

    def load() -> dict[str, Any]:
        model = service.get_for(session, principal, name, client=client)
        version = service.current_version(session, model)
        check(version)
        return {"model": model.name, "version": version.version, "family": version.family, "params": version.params,
                "shape": version.shape, "weights": [s["weights"] for s in version.shards]}

    return await run_in_threadpool(run_unit_of_work, session, load, reads_only=True)


def _is_language_model(family: str) -> bool:
    try:
        return get_family(family).data_kind == "text"
    except UnknownFamilyError:
        return False


def _language_model_only(version) -> None:
    if not _is_language_model(version.family):
        raise Unprocessable("Only language models (family causal_lm) generate and score; use predict.")


@router.post(
    "/{name}/generate", response_model=GenerateOut, operation_id="generate",
    summary="Continue a prompt with a language model's current version",
    # 413: the prompt is over OBLIVIATE_MAX_PROMPT_BYTES; 409, 422, 429 and 503 as for predict.
    responses=problem_responses(409, 413, 429, 503),
)
@reads_only
async def generate(name: ModelName, body: GenerateBody, principal: Reader, client: ClientName = None) -> Any:
    """Bytes after the prompt, greedy at temperature 0 or sampled under `seed`, until end-of-text
    or `max_new_tokens`; invalid UTF-8 at the end of the continuation is replaced (U+FFFD)."""
    settings = get_settings()
    size = len(body.prompt.encode("utf-8"))
    if size > settings.max_prompt_bytes:
        raise PayloadTooLarge(f"The prompt has {size} bytes; at most {settings.max_prompt_bytes} (OBLIVIATE_MAX_PROMPT_BYTES).")
    if body.max_new_tokens > settings.max_new_tokens:
        raise Unprocessable(f"max_new_tokens is at most {settings.max_new_tokens} (OBLIVIATE_MAX_NEW_TOKENS).")
    loaded = await _load_current(principal, name, client, _language_model_only)
    text = await inference.generate(principal.client, loaded, body.prompt, body.max_new_tokens, body.temperature, body.seed)
    return GenerateOut(model=loaded["model"], version=loaded["version"], text=text)


@router.post(
    "/{name}/score", response_model=ScoreOut, operation_id="score",
    summary="Log-likelihood of texts under a language model's current version",
    # 413: more than OBLIVIATE_MAX_PREDICT_ROWS texts, or one over OBLIVIATE_MAX_PROMPT_BYTES;
    # 409, 422, 429 and 503 as for predict.
    responses=problem_responses(409, 413, 429, 503),
)
@reads_only
async def score(name: ModelName, body: ScoreBody, principal: Reader, client: ClientName = None) -> Any:
    settings = get_settings()
    if len(body.texts) > settings.max_predict_rows:
        raise PayloadTooLarge(f"At most {settings.max_predict_rows} texts per call; this one has {len(body.texts)}.")
    big = next((i for i, text in enumerate(body.texts) if len(text.encode("utf-8")) > settings.max_prompt_bytes), None)
    if big is not None:
        raise PayloadTooLarge(f"Text {big} is longer than {settings.max_prompt_bytes} bytes (OBLIVIATE_MAX_PROMPT_BYTES).")
    loaded = await _load_current(principal, name, client, _language_model_only)
    scores = await inference.score(principal.client, loaded, body.texts)
    return ScoreOut(model=loaded["model"], version=loaded["version"], scores=scores)
