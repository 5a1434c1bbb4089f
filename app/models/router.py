from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import tarfile
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from app.artifacts.store import get_store
from app.audit import downloads
from app.config import get_settings
from app.datasets import images
from app.deps import SessionDep, scoped
from app.datasets.storage import work_dir
from app.db import get_sessionmaker
from app.deps import SessionDep, run_unit_of_work, scoped
from app.errors import Gone, PayloadTooLarge, Unprocessable, sanitised_validation_errors
from app.families.registry import data_kind
from app.idempotency import http as idempotency
from app.idempotency.http import IdempotencyKeyHeader
from app.jobs.schemas import JobOut
from app.models import bases, hf_archive, importer, inference, rehearsal_results, service
from app.models.schemas import (
    NAME_PATTERN,
    BaseImportMetadata,
    BaseOut,
    BasePage,
    ImportMetadata,
    ModelCreate,
    ModelOut,
    ModelPage,
    GenerateBody,
    GenerateOut,
    PredictBody,
    PredictOut,
    RehearsalOut,
    SampleBody,
    SampleOut,
    ScoreBody,
    ScoreImagesBody,
    ScoreImagesOut,
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
BASE_METADATA_EXAMPLE = json.dumps({"kind": "base", "name": "tiny-gpt2"})


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
    "/import", status_code=201, response_model=ModelOut | BaseOut, operation_id="import_model",
    summary="Import trained weights, or a Hugging Face base model", dependencies=[IdempotencyKeyHeader],
    # As for training, and 409 for weights that hold an erased subject or a name taken; 413 for the
    # weights file (OBLIVIATE_MAX_UPLOAD_BYTES) or the base's archive (OBLIVIATE_MAX_IMPORT_BYTES).
    responses=problem_responses(404, 409, 410, 413),
)
def import_model(
    request: Request, session: SessionDep, principal: Writer,
    metadata: Annotated[str, Form(
        description="JSON. Trained weights: name, family, params, dataset_version_id, record_ids, seed. "
        "A Hugging Face base: kind \"base\" and name.",
        examples=[IMPORT_METADATA_EXAMPLE, BASE_METADATA_EXAMPLE],
    )],
    weights: Annotated[UploadFile, File(description="safetensors weights of one network (trained weights)")] = None,
    record_ids: Annotated[UploadFile, File(
        description="The trained records' ids instead of metadata.record_ids: Parquet with an integer record_id "
        "column, or one decimal id per line",
    )] = None,
    archive: Annotated[UploadFile, File(
        description="A base: a tar (optionally compressed) or zip of a save_pretrained directory; safetensors "
        "weights only (docs: Bring your own language model)",
    )] = None,
) -> Any:
    meta = _import_metadata(metadata)
    if isinstance(meta, BaseImportMetadata):
        if weights is not None or record_ids is not None or archive is None:
            raise Unprocessable("A base is imported as one archive file part, without weights or record_ids.")
        return _import_base(request, session, principal, meta, archive)
    if archive is not None or weights is None:
        raise Unprocessable("Trained weights are imported as the weights file part; an archive is for a base "
                            "(metadata kind: base).")
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


def _import_metadata(metadata: str) -> ImportMetadata | BaseImportMetadata:
    try:
        parsed = json.loads(metadata)
    except (ValueError, RecursionError):
        parsed = None
    kind = parsed.get("kind") if isinstance(parsed, dict) else None
    try:
        return (BaseImportMetadata if kind == "base" else ImportMetadata).model_validate_json(metadata)
    except ValidationError as exc:
        errors = sanitised_validation_errors(exc.errors(include_input=False, include_url=False))
        raise Unprocessable("The metadata field is not valid.", errors=errors) from None


def _import_base(request: Request, session: SessionDep, principal, meta: BaseImportMetadata, archive: UploadFile) -> Any:
    """Check and normalise the archive on disk before the unit of work takes any lock; the
    handler stores it and records the base."""
    limit = get_settings().max_import_bytes
    source = archive.file
    size = source.seek(0, io.SEEK_END)
    if size > limit:
        raise PayloadTooLarge(f"The archive has {size} bytes; at most {limit} (OBLIVIATE_MAX_IMPORT_BYTES).")
    digest = hashlib.sha256()
    source.seek(0)
    for chunk in iter(lambda: source.read(hf_archive.CHUNK), b""):
        digest.update(chunk)
    upload_sha = digest.hexdigest()
    source.seek(0)
    with tempfile.TemporaryDirectory(dir=work_dir(), prefix="base-") as folder:
        files = tempfile.mkdtemp(dir=folder)
        checked = hf_archive.read(source, FilePath(files), limit)

        def handler():
            base = bases.import_base(session, principal, meta, checked, upload_sha256=upload_sha)
            return 201, bases.to_out(base).model_dump(mode="json"), {"Location": f"/v1/models/bases/{base.name}"}

        payload = {"metadata": meta.model_dump(mode="json"), "archive_sha256": upload_sha}
        return idempotency.run(request, session, principal, "import-model", payload, handler)


def _read_part(part: UploadFile, name: str) -> bytes:
    limit = get_settings().max_upload_bytes
    data = part.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The {name} file is larger than the upload limit.")
    return data


@router.get("/bases", response_model=BasePage, operation_id="list_model_bases", summary="List imported bases")
def list_bases(session: SessionDep, principal: Reader) -> Any:
    return BasePage(items=[bases.to_out(base) for base in bases.list_for(session, principal)])


@router.get("/bases/{name}", response_model=BaseOut, operation_id="get_model_base", summary="Get an imported base",
            responses=problem_responses(404))
def get_base(name: ModelName, session: SessionDep, principal: Reader) -> Any:
    return bases.to_out(bases.get_for(session, principal, name))


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
        if _is_image_model(version.family):
            raise Unprocessable("This model is an image model: use its sample and score-images endpoints.")
        width = version.shape["n_features"]
        bad = next((i for i, row in enumerate(body.rows) if len(row) != width), None)
        if bad is not None:
            raise Unprocessable(f"Row {bad} has {len(body.rows[bad])} values; the model expects {width}.")

    loaded = await inference.load_current(principal, name, client, check)
    probabilities = await inference.predict(principal.client, loaded, body.rows)
    # Finite inputs can still overflow a network (float32 inside): say so instead of sending NaN.
    bad = next((i for i, row in enumerate(probabilities) if not all(p is not None and math.isfinite(p) for p in row)), None)
    if bad is not None:
        raise Unprocessable(f"Row {bad} gives no finite prediction: its values are too large for this model.")
    return PredictOut(model=loaded["model"], version=loaded["version"], probabilities=probabilities)


def _is_language_model(family: str) -> bool:
    return data_kind(family) == "text"


def _is_image_model(family: str) -> bool:
    return data_kind(family) == "image"


def _image_model_only(version) -> None:
    if not _is_image_model(version.family):
        raise Unprocessable("Only image models (family image_diffusion) sample and score images.")


def _language_model_only(version) -> None:
    if not _is_language_model(version.family):
        raise Unprocessable("Only language models (families causal_lm and hf_causal_lm) generate and score; use predict.")


@router.post(
    "/{name}/generate", response_model=GenerateOut, operation_id="generate",
    summary="Continue a prompt with a language model's current version",
    # 413: the prompt is over OBLIVIATE_MAX_PROMPT_BYTES; 409, 422, 429 and 503 as for predict.
    responses=problem_responses(409, 413, 429, 503),
)
@reads_only
async def generate(name: ModelName, body: GenerateBody, principal: Reader, client: ClientName = None) -> Any:
    """Tokens after the prompt (bytes for causal_lm, the model's tokenizer's for hf_causal_lm),
    greedy at temperature 0 or sampled under `seed`, until end-of-text or `max_new_tokens`;
    invalid UTF-8 at the end of the continuation is replaced (U+FFFD). The work is bounded
    counting the prompt's bytes as tokens, which no byte-level tokenizer exceeds."""
    settings = get_settings()
    size = len(body.prompt.encode("utf-8"))
    if size > settings.max_prompt_bytes:
        raise PayloadTooLarge(f"The prompt has {size} bytes; at most {settings.max_prompt_bytes} (OBLIVIATE_MAX_PROMPT_BYTES).")
    if body.max_new_tokens > settings.max_new_tokens:
        raise Unprocessable(f"max_new_tokens is at most {settings.max_new_tokens} (OBLIVIATE_MAX_NEW_TOKENS).")
    loaded = await inference.load_current(principal, name, client, _language_model_only)
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
    loaded = await inference.load_current(principal, name, client, _language_model_only)
    scores = await inference.score(principal.client, loaded, body.texts)
    return ScoreOut(model=loaded["model"], version=loaded["version"], scores=scores)


@router.post(
    "/{name}/sample", response_model=SampleOut, operation_id="sample_images",
    summary="Draw images from an image model's current version",
    # 422: n over OBLIVIATE_MAX_SAMPLES, steps or label out of the model's range, over
    # OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS, or not an image model; 409, 429 and 503 as for predict.
    responses=problem_responses(409, 429, 503),
)
@reads_only
async def sample(name: ModelName, body: SampleBody, principal: Reader, client: ClientName = None) -> Any:
    """`n` images drawn by DDPM sampling under `seed` (same seed, same images), in `steps`
    denoising steps; a SISA model draws each image from one shard, chosen in proportion to the
    shards' training records (uniformly for a version written before they were kept)."""
    limit = get_settings().max_samples
    if body.n > limit:
        raise Unprocessable(f"n is at most {limit} (OBLIVIATE_MAX_SAMPLES).")
    chosen: dict[str, int] = {}

    def check(version) -> None:
        _image_model_only(version)
        steps = body.steps if body.steps is not None else int(version.params["sample_steps"])
        if steps > int(version.params["num_train_timesteps"]):
            raise Unprocessable(f"steps is at most the model's num_train_timesteps ({version.params['num_train_timesteps']}).")
        _check_labels(version, [] if body.label is None else [body.label], required=False)
        chosen["steps"] = steps

    loaded = await inference.load_current(principal, name, client, check)
    images = await inference.sample(principal.client, loaded, body.n, body.seed, chosen["steps"], body.label)
    return SampleOut(model=loaded["model"], version=loaded["version"], images=images)


@router.post(
    "/{name}/score-images", response_model=ScoreImagesOut, operation_id="score_images",
    summary="Denoising loss of images under an image model's current version",
    # 422: more than OBLIVIATE_MAX_SAMPLES images, one that is not a PNG or JPEG of the model's size,
    # labels missing or out of range, over OBLIVIATE_MAX_IMAGE_INFERENCE_FLOPS, or not an image model;
    # 409, 429 and 503 as for predict.
    responses=problem_responses(409, 429, 503),
)
@reads_only
async def score_images(name: ModelName, body: ScoreImagesBody, principal: Reader, client: ClientName = None) -> Any:
    """Each image's denoising loss at fixed timesteps: how well the model predicts the noise added
    to it. Works a model trained on score lower than others; the membership signal for
    diffusion models. A conditional model needs each image's label."""
    settings = get_settings()
    if len(body.images) > settings.max_samples:
        raise Unprocessable(f"At most {settings.max_samples} images per call (OBLIVIATE_MAX_SAMPLES).")
    if body.labels is not None and len(body.labels) != len(body.images):
        raise Unprocessable("labels has one class per image: give as many labels as images.")
    sizes: dict[str, list[int]] = {}

    def check(version) -> None:
        _image_model_only(version)
        _check_labels(version, body.labels or [], required=True, count=len(body.images))
        params = version.params
        sizes["expected"] = [int(params["image_size"]), int(params["image_size"]), int(params["channels"])]

    loaded = await inference.load_current(principal, name, client, check)
    images = await run_in_threadpool(_clean_images, body.images, sizes["expected"], settings.max_image_pixels)
    losses = await inference.score_images(principal.client, loaded, images, body.labels)
    return ScoreImagesOut(model=loaded["model"], version=loaded["version"], losses=losses)


def _check_labels(version, labels: list[int], *, required: bool, count: int = 0) -> None:
    """Labels are class indices of a conditional model; an unconditional model takes none."""
    conditional = bool(version.params.get("conditional"))
    if not conditional:
        if labels:
            raise Unprocessable("This model is not conditional: it takes no labels.")
        return
    if required and len(labels) != count:
        raise Unprocessable("This model is conditional: give labels, one class per image.")
    classes = int(version.shape["n_classes"])
    bad = next((i for i, label in enumerate(labels) if label >= classes), None)
    if bad is not None:
        raise Unprocessable(f"Label {bad} is not a class of this model (0 to {classes - 1}).")


def _clean_images(encoded: list[str], expected: list[int], max_pixels: int) -> list[str]:
    """The images decoded, checked against the model's size and re-encoded as plain PNG (base64),
    as uploads are: the worker receives only pixels."""
    cleaned = []
    for index, text in enumerate(encoded):
        where = f"Image {index} (counting from 0)"
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Unprocessable(f"{where} is not base64.") from None
        png, size = images.reencode(data, where, max_pixels)
        if size != expected:
            raise Unprocessable(f"{where} is {size[0]}×{size[1]} with {size[2]} channel(s); this model takes "
                                f"{expected[0]}×{expected[1]} with {expected[2]}.")
        cleaned.append(base64.b64encode(png).decode("ascii"))
    return cleaned
